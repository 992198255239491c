"""Quick CUDA-vs-CPU digest comparison over awkward inputs (the full suite is tests/)."""
import torch

import sentry_ops

torch.manual_seed(0)
cases = []
for n in [0, 1, 63, 64, 65, 1023, 1024, 1025, 4095, 4096, 4097, 131071, 131072, 131073,
          128 * 4096 + 1, 16 * 2**20 + 3, 100 * 2**20 + 1]:
    cases.append(torch.randint(0, 256, (n,), dtype=torch.uint8))
base = torch.randint(0, 256, (3 * 2**20 + 17,), dtype=torch.uint8)
cases += [base[1:], base[3:5000], base[4:]]
cases += [torch.randn(300, 700).t(), torch.randn(5, 3, 4)[:, ::2]]
cases += [torch.randn(int(s)) for s in torch.randint(0, 5000, (1000,))]
bad = 0
for alg in sentry_ops.ALGORITHMS:
    cpu = sentry_ops.hash_tensors(cases, alg)
    gpu = sentry_ops.hash_tensors([c.cuda() for c in cases], alg)
    mism = (cpu != gpu.cpu()).any(dim=1).nonzero().flatten().tolist()
    bad += len(mism)
    print(alg, "mismatching cases:", mism[:20])
    rows = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8)
    r_ok = torch.equal(sentry_ops.hash_rows(rows, alg), sentry_ops.hash_rows(rows.cuda(), alg).cpu())
    print(alg, "hash_rows equal:", r_ok)
    bad += not r_ok
big = torch.empty(4 * 2**30 + 5, dtype=torch.uint8, device="cuda").random_()
for alg in sentry_ops.ALGORITHMS:
    same = torch.equal(sentry_ops.hash_tensors([big], alg).cpu(), sentry_ops.hash_tensors([big.cpu()], alg))
    print(alg, "> 4 GiB tensor equal:", same)
    bad += not same
print("SPOT CHECK", "FAILED" if bad else "OK")
