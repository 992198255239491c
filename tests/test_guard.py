"""IntegrityGuard: passes untouched modules, catches a flipped bit in any parameter or buffer,
in eager mode, in forward pre-hooks, under torch.compile(fullgraph=True) and (GPU) inside
captured CUDA graphs, with no host sync."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import reference
import sentry
from sentry import IntegrityGuard
from sentry.errors import FormatError, VerificationError

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 64)
        self.bn = torch.nn.BatchNorm1d(64)
        self.fc2 = torch.nn.Linear(64, 10)
        self.register_buffer("scratch", torch.zeros(3), persistent=False)  # not in state_dict

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def net(device="cpu"):
    torch.manual_seed(0)
    return Net().to(device).eval()


def flip(t, byte=5, bit=2):
    with torch.no_grad():
        t.view(-1).view(torch.uint8)[byte] ^= 1 << bit


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["fc1.weight", "fc2.bias", "bn.running_mean",
                                  "bn.num_batches_tracked"])
def test_flipped_bit_is_caught_and_named(device, name):
    m = net(device)
    guard = IntegrityGuard.snapshot(m)
    ok = guard.check()
    assert ok.dtype == torch.bool and ok.dim() == 0 and ok.device.type == device
    assert bool(ok)
    t = m.state_dict(keep_vars=True)[name]
    flip(t, byte=t.numel() * t.element_size() - 1)  # the last byte
    assert not bool(guard.check())
    assert guard.report() == [name]
    with pytest.raises(VerificationError) as info:
        guard.verify()
    assert info.value.changed == [name]
    flip(t, byte=t.numel() * t.element_size() - 1)
    assert bool(guard.check()) and guard.report() == []


def test_guarded_tensors_and_digests_are_the_signed_ones(b3):
    """The guard hashes exactly the state_dict tensors (not the non-persistent buffer), in
    sorted-name order, with the digests b3sum gives their bytes."""
    m = net()
    guard = IntegrityGuard.snapshot(m)
    state = m.state_dict()
    assert guard.names == sorted(state) and "scratch" not in guard.names
    want = reference.b3sum_many([reference.tensor_bytes(state[n]) for n in guard.names])
    assert guard.expected_hex() == {n: w.hex() for n, w in zip(guard.names, want)}


@pytest.mark.parametrize("algorithm", ["blake3", "sha256-tree"])
def test_from_a_signature(tmp_path, keys, algorithm):
    m = net()
    sig = tmp_path / "m.sig"
    sentry.sign_model(m, keys["alice"][0], sig, algorithm=algorithm)
    guard = IntegrityGuard(m, sig, public_key=keys["alice"][1])
    assert guard.algorithm == algorithm and bool(guard.check())
    flip(m.fc2.weight)
    assert guard.report() == ["fc2.weight"]


def test_signature_problems_fail_at_construction(tmp_path, keys):
    m = net()
    sig = tmp_path / "m.sig"
    sentry.sign_model(m, keys["alice"][0], sig)
    with pytest.raises(VerificationError, match="does not verify with this key"):
        IntegrityGuard(m, sig, public_key=keys["mallory"][1])
    with pytest.raises(FormatError, match="exactly one of public_key"):
        IntegrityGuard(m, sig)
    other = torch.nn.Sequential(torch.nn.Linear(32, 64))
    with pytest.raises(VerificationError) as info:
        IntegrityGuard(other, sig, public_key=keys["alice"][1])
    assert info.value.unexpected == ["0.bias", "0.weight"] and "fc1.weight" in info.value.missing
    with pytest.raises(VerificationError) as info:
        IntegrityGuard(net().double(), sig, public_key=keys["alice"][1])
    assert "fc1.weight" in info.value.changed  # signed as F32


def test_from_digests(ops):
    m = net()
    names = sorted(m.state_dict())
    digests = ops.hash_tensors([m.state_dict()[n] for n in names])
    as_hex = dict(zip(names, ops.digests_hex(digests)))
    assert bool(IntegrityGuard(m, as_hex).check())
    assert bool(IntegrityGuard(m, digests).check())
    as_hex["fc1.bias"] = "00" * 32
    assert IntegrityGuard(m, as_hex).report() == ["fc1.bias"]
    with pytest.raises(FormatError, match="uint8 \\[9, 32\\] tensor"):
        IntegrityGuard(m, digests[:3])
    with pytest.raises(FormatError, match="'fc1.bias' is not 32 bytes"):
        IntegrityGuard(m, {**as_hex, "fc1.bias": "abc"})
    with pytest.raises(VerificationError) as info:
        IntegrityGuard(m, {k: v for k, v in as_hex.items() if k != "fc2.bias"})
    assert info.value.unexpected == ["fc2.bias"]


def test_hook_mode_is_sticky_until_reset():
    m = net()
    guard = IntegrityGuard.snapshot(m, hook=True)
    x = torch.randn(4, 32)
    m(x)
    assert guard.passed()
    flip(m.fc1.bias)
    m(x)
    flip(m.fc1.bias)  # restored, but the failure was seen
    m(x)
    assert not guard.passed()
    guard.reset()
    m(x)
    assert guard.passed()
    guard.detach()
    flip(m.fc1.bias)
    m(x)
    assert guard.passed()  # detached: no longer checked


def test_assert_mode_raises_on_the_cpu():
    m = net()
    guard = IntegrityGuard.snapshot(m, on_failure="assert")
    guard.check()
    flip(m.fc2.weight)
    with pytest.raises(RuntimeError, match="IntegrityGuard"):
        guard.check()


def test_replaced_parameter_is_the_one_checked():
    m = net()
    guard = IntegrityGuard.snapshot(m)
    with torch.no_grad():
        m.fc1.weight = torch.nn.Parameter(m.fc1.weight.clone())
    assert bool(guard.check())
    with torch.no_grad():
        m.fc1.weight[0, 0] += 1
    assert guard.report() == ["fc1.weight"]
    m.fc2.bias = torch.nn.Parameter(torch.zeros(2, 5))  # same bytes count, other shape
    with pytest.raises(VerificationError, match="changed dtype or shape") as info:
        guard.check()
    assert info.value.changed == ["fc2.bias"]


def test_refresh_after_an_optimizer_step():
    m = net().train()
    guard = IntegrityGuard.snapshot(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.randn(8, 32)).sum().backward()
    opt.step()
    assert not bool(guard.check())  # the weights moved
    guard.refresh()
    assert bool(guard.check())


def test_refuses_what_it_cannot_guard():
    with pytest.raises(FormatError, match="nn.Module"):
        IntegrityGuard({"w": torch.zeros(1)}, {})
    with pytest.raises(FormatError, match="on_failure"):
        IntegrityGuard.snapshot(net(), on_failure="log")


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    """check() inside a compiled step (no graph break: fullgraph=True), and the hook inside a
    compiled module, each seeing every call's data."""
    torch._dynamo.reset()
    m = net()
    guard = IntegrityGuard.snapshot(m)
    x = torch.randn(4, 32)

    @torch.compile(fullgraph=True, backend=backend)
    def step(x):
        return m(x), guard.check()

    y, ok = step(x)
    assert bool(ok) and torch.allclose(y, m(x))
    flip(m.fc1.weight)
    assert not bool(step(x)[1])
    flip(m.fc1.weight)
    assert bool(step(x)[1])

    guard.attach()
    compiled = torch.compile(m, fullgraph=True, backend=backend)
    compiled(x)
    assert guard.passed()
    flip(m.bn.running_var)
    compiled(x)
    assert not guard.passed()


# ---------------------------------------------------------------------------------------------
# GPU: no host sync, CUDA graphs, device-side assert


@pytest.mark.cuda
def test_check_does_not_sync_the_host():
    m = net("cuda")
    guard = IntegrityGuard.snapshot(m, hook=True)
    x = torch.randn(8, 32, device="cuda")
    guard.check()  # first call: lazy initialisation outside the sync check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ok = guard.check()
        m(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert bool(ok) and guard.passed()


@pytest.mark.cuda
def test_cuda_graph_replay():
    m = net("cuda")
    guard = IntegrityGuard.snapshot(m, hook=True)
    x = torch.randn(8, 32, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up off the default stream, as capture requires
        m(x)
        guard.check()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = m(x)  # the hook's check_ is captured with the forward
        ok = guard.check()
    guard.reset()
    graph.replay()
    assert bool(ok) and guard.passed()
    flip(m.fc2.weight)
    graph.replay()
    assert not bool(ok) and not guard.passed()
    flip(m.fc2.weight)
    guard.reset()
    graph.replay()
    assert bool(ok) and guard.passed() and torch.allclose(y, m(x))


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_torch_compile_inductor_cuda(mode):
    torch._dynamo.reset()
    m = net("cuda")
    guard = IntegrityGuard.snapshot(m)
    x = torch.randn(8, 32, device="cuda")
    step = torch.compile(lambda x: (m(x), guard.check()), fullgraph=True, mode=mode)
    for _ in range(3):  # reduce-overhead records its CUDA graph after warm-up calls
        assert bool(step(x)[1].clone())
    flip(m.fc1.weight)
    assert not bool(step(x)[1].clone())


@pytest.mark.cuda
def test_device_side_assert(tmp_path):
    """on_failure="assert": a tampered weight stops the GPU (in a child process: a device-side
    assert ends the CUDA context)."""
    script = textwrap.dedent("""
        import torch, sentry
        m = torch.nn.Linear(64, 64).cuda()
        guard = sentry.IntegrityGuard.snapshot(m, on_failure="assert")
        guard.check(); torch.cuda.synchronize(); print("passed", flush=True)
        with torch.no_grad():
            m.weight.view(-1).view(torch.uint8)[0] ^= 1
        guard.check()
        torch.cuda.synchronize()
        print("not reached", flush=True)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's sentry
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=root)
    assert "passed" in out.stdout and "not reached" not in out.stdout
    assert out.returncode != 0 and "assert" in out.stderr.lower()


class Tied(torch.nn.Module):
    """Input embedding and output layer sharing one weight, as GPT-2's wte and lm_head."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.embed(ids))


def test_tied_weights_hashed_once_and_named_together(ops, monkeypatch):
    m = Tied()
    calls = []
    real = torch.ops.sentry.hash_tensors.default
    guard = IntegrityGuard.snapshot(m)
    assert guard.names == ["embed.weight", "head.weight"]
    assert len(set(guard.expected_hex().values())) == 1
    monkeypatch.setattr(torch.ops.sentry.hash_tensors, "default",
                        lambda ts, a: calls.append(len(ts)) or real(ts, a))
    assert bool(guard.check()) and calls == [1]  # one tensor hashed for the two names
    flip(m.embed.weight)
    assert guard.report() == ["embed.weight", "head.weight"]
    m.head.weight = torch.nn.Parameter(m.embed.weight.detach().clone())  # untied
    with pytest.raises(VerificationError, match="tied tensors are no longer one tensor"):
        guard.check()


def test_tied_weights_with_different_trusted_digests_are_refused(ops):
    m = Tied()
    digest = ops.digests_hex(ops.hash_tensors([m.embed.weight]))[0]
    with pytest.raises(VerificationError, match="tied tensors") as info:
        IntegrityGuard(m, {"embed.weight": digest, "head.weight": "11" * 32})
    assert info.value.changed == ["head.weight"]


# ---------------------------------------------------------------------------------------------
# The module as it is at check time: swapped submodules, replaced or new storage, added and
# removed tensors, parametrizations.


class Seq(torch.nn.Sequential):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__(torch.nn.Linear(16, 16, bias=False), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                         torch.nn.BatchNorm1d(16))


class _Double(torch.nn.Module):
    def forward(self, w):
        return 2 * w


def _swap_submodule(m):
    m[2] = torch.nn.Linear(16, 16)  # other random weights, same names, dtypes and shapes
    return ["2.bias", "2.weight"], "changed"


def _new_parameter_object(m):
    with torch.no_grad():
        m[0].weight = torch.nn.Parameter(m[0].weight + 1)
    return ["0.weight"], "changed"


def _new_storage(m):
    m[2].bias.data = torch.randn(16)
    return ["2.bias"], "changed"


def _buffer_replaced(m):
    m[3].running_mean = torch.full((16,), 3.0)
    return ["3.running_mean"], "changed"


def _parameter_added(m):
    m[2].extra = torch.nn.Parameter(torch.zeros(4))
    return ["2.extra"], "unexpected"


def _none_slot_filled(m):
    m[0].bias = torch.nn.Parameter(torch.zeros(16))  # Linear(bias=False) holds bias=None
    return ["0.bias"], "unexpected"


def _parameter_removed(m):
    del m[2].bias
    return ["2.bias"], "missing"


def _buffer_removed(m):
    del m[3].running_var
    return ["3.running_var"], "missing"


def _buffer_made_non_persistent(m):
    m[3].register_buffer("running_mean", m[3].running_mean, persistent=False)
    return ["3.running_mean"], "missing"


def _parametrized(m):
    torch.nn.utils.parametrize.register_parametrization(m[2], "weight", _Double())
    return ["2.parametrizations.weight.original", "2.weight"], None


CHANGES = [_swap_submodule, _new_parameter_object, _new_storage, _buffer_replaced,
           _parameter_added, _none_slot_filled, _parameter_removed, _buffer_removed,
           _buffer_made_non_persistent, _parametrized]


def _seen(guard, expect, kind, run):
    """run() checks; the change must show as a failed check naming `expect`, or as a
    VerificationError naming them (never another exception, never a pass)."""
    try:
        ok = run()
    except VerificationError as e:
        assert kind != "changed", "a same-layout change should fail the check, not raise"
        assert sorted(e.changed + e.missing + e.unexpected) == expect, str(e)
        assert all(n in str(e) for n in expect)
        if kind is not None:
            assert getattr(e, kind) == expect
        else:
            assert "parametriz" in str(e)
    else:
        assert not bool(ok)
    assert guard.report() == expect
    with pytest.raises(VerificationError):
        guard.verify()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_module_as_it_is_at_check_time(change, device):
    m = Seq().to(device).eval()
    guard = IntegrityGuard.snapshot(m)
    assert bool(guard.check())
    with torch.device(device):
        expect, kind = change(m)
    _seen(guard, expect, kind, guard.check)


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_module_as_it_is_at_check_time_hook(change):
    m = Seq().eval()
    guard = IntegrityGuard.snapshot(m, hook=True)
    x = torch.randn(4, 16)
    m(x)
    assert guard.passed()
    expect, kind = change(m)

    def run():
        m(x)
        return guard.ok
    _seen(guard, expect, kind, run)
    assert not guard.passed() or kind != "changed"


def test_swapped_submodule_then_restored():
    m = Seq().eval()
    guard = IntegrityGuard.snapshot(m)
    original = m[2]
    m[2] = torch.nn.Linear(16, 16)
    assert not bool(guard.check()) and guard.report() == ["2.bias", "2.weight"]
    m[2] = original
    assert bool(guard.check()) and guard.report() == []
    m[1] = torch.nn.GELU()  # no tensors: the state dict, and so the check, are unchanged
    assert bool(guard.check())


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_module_as_it_is_at_check_time_compiled(change):
    """Under torch.compile(fullgraph=True) the change recompiles (dynamo guards on the walk)
    and the compiled check returns False, never raises; report() names the tensors in eager."""
    torch._dynamo.reset()
    m = Seq().eval()
    guard = IntegrityGuard.snapshot(m)
    step = torch.compile(lambda: guard.check(), fullgraph=True, backend="aot_eager")
    assert bool(step())
    expect, kind = change(m)
    assert not bool(step())
    assert guard.report() == expect


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("change", [_swap_submodule, _parameter_added, _parametrized],
                         ids=lambda f: f.__name__.strip("_"))
def test_module_as_it_is_at_check_time_compiled_hook_inductor(change, device):
    torch._dynamo.reset()
    m = Seq().to(device).eval()
    guard = IntegrityGuard.snapshot(m, hook=True)
    compiled = torch.compile(m, fullgraph=True)
    x = torch.randn(4, 16, device=device)
    compiled(x)
    assert guard.passed()
    with torch.device(device):
        expect, _ = change(m)
    compiled(x)
    assert not guard.passed() and guard.report() == expect


@pytest.mark.cuda
def test_check_after_a_swap_does_not_sync_the_host():
    """The structure is host metadata: finding a swapped submodule (and walking again) needs
    no sync, and neither does the check that follows."""
    m = Seq().cuda().eval()
    guard = IntegrityGuard.snapshot(m)
    guard.check()
    with torch.device("cuda"):
        m[2] = torch.nn.Linear(16, 16)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        first, second = guard.check(), guard.check()  # walks again, then the fast path
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not bool(first) and not bool(second) and guard.report() == ["2.bias", "2.weight"]
