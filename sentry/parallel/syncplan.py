"""The plan and the check behind verify_sharded and SyncVerifier (docs/DISTRIBUTED.md).

Plan, once (collect on each rank, then the same Plan on every rank from everyone's parts):
every rank describes its tensors as byte runs of full tensors (sentry.layout); the runs of all
ranks must tile each full tensor, identical runs on several ranks being copies (replicas).
Each tensor is finished once per copy: copy c takes, for every distinct run, its c-th holder
(cycling), so every holder's bytes are in some finished root. The C++ planners
(sentry_ops.plan_runs / plan_finish) turn that into device tables.

Check, each time: one hash_runs call per rank (its message: the subtree values of its runs'
whole leaves, then its edge bytes, then a status), one all-gather of the fixed-size messages,
one finish_runs call that finishes every root of every copy, a comparison on the device and
one host copy of the result. Python work does not grow with the number of tensors, except to
name them when something differs.
"""
import hashlib
import math

import numpy as np
import torch

import sentry_ops

from . import collectives
from . import layout as layout_mod
from ..errors import FormatError
from ..formats.safetensors_format import byte_length

LEAF_BYTES = {"blake3": 1024, "sha256-tree": 4096}
RUN_COLS, PIECE_COLS, FRAG_COLS, LEVEL_COLS = 8, 4, 6, 3  # csrc/ops/run_plan.h
TRAILER = 16  # bytes after each message's payload: the rank's hash_runs status


# ---------------------------------------------------------------------------------------------
# what one rank holds


def collect(state, layout, mapping, full_shapes):
    """(local tensors, part): this rank's tensors in order (sorted keys) and its part of the
    plan: names and (dtype, full shape) of the full tensors it holds bytes of, and its runs,
    int64 [R, 5] (source tensor, byte offset in it, tensor index into names, start, length)."""
    unknown = sorted(set(layout) - set(state))
    if unknown:
        raise FormatError(f"layout names tensors this rank does not have: {unknown[:10]}")
    sources, names, meta, index, rows = [], [], [], {}, []
    for key in sorted(state):
        local, boxes = layout_mod.regions_of(key, state[key], layout, mapping, full_shapes)
        src = len(sources)
        sources.append(local)
        dtype, size = layout_mod.dtype_name(local), local.element_size()
        for box in boxes:
            m = (dtype, tuple(int(d) for d in box.full_shape))
            if box.name not in index:
                index[box.name] = len(names)
                names.append(box.name)
                meta.append(m)
            elif meta[index[box.name]] != m:
                raise FormatError(f"tensor '{box.name}': held as {m[0]} {list(m[1])} and as "
                                  f"{meta[index[box.name]][0]} {list(meta[index[box.name]][1])}")
            tid = index[box.name]
            if math.prod(box.full_shape) == 0:  # an empty tensor: held, with no bytes
                rows.append(np.array([[src, 0, tid, 0, 0]], dtype=np.int64))
                continue
            local_at, full_at, length = layout_mod.box_runs(box, tuple(local.shape), size)
            if len(full_at):
                one = np.ones_like(full_at)
                rows.append(np.stack([one * src, local_at, one * tid, full_at, one * length], 1))
    runs = np.concatenate(rows) if rows else np.zeros((0, 5), dtype=np.int64)
    return sources, {"names": names, "meta": meta, "runs": runs}


# ---------------------------------------------------------------------------------------------
# the plan


def _sections(header, body, counts):
    """Views of consecutive sections of `body`: counts = [(rows, cols), ...]."""
    out, at = [], 0
    for rows, cols in counts:
        out.append(body[at:at + rows * cols].reshape(rows, cols))
        at += rows * cols
    return out


def _expand(starts, counts):
    """Indices starts[i] + k for k < counts[i], and the i of each."""
    owner = np.repeat(np.arange(len(counts)), counts)
    if not len(owner):
        return owner, owner
    first = np.cumsum(counts) - counts
    return starts[owner] + (np.arange(len(owner)) - first[owner]), owner


class Plan:
    """The same on every rank: what every rank's message holds and how to finish every tree.

    trees: one per (tensor, copy); tree_tensor[q], tree_copy[q]. problems: {name: why it
    cannot be finished as laid out}; blame: {name: ranks at fault for it}.
    """

    def __init__(self, parts, rank, algorithm, *, segment_levels=None, keep_all=False):
        self.algorithm, self.rank, self.world = algorithm, rank, len(parts)
        h = hashlib.sha256(repr((algorithm, sorted((segment_levels or {}).items()))).encode())
        for p in parts:
            h.update(repr((p["names"], p["meta"])).encode())
            h.update(np.ascontiguousarray(p["runs"], dtype=np.int64).tobytes())
        self.fingerprint = h.digest()[:7] + b"\x01"  # never all zeros: "no plan" is
        L = self.leaf = LEAF_BYTES[algorithm]
        self.problems, self.blame, self.keep_all = {}, {}, keep_all
        names = sorted({n for p in parts for n in p["names"]})
        self.names, ids = names, {n: i for i, n in enumerate(names)}
        seen = {}
        for r, p in enumerate(parts):
            for n, (dtype, shape) in zip(p["names"], p["meta"]):
                seen.setdefault(n, {}).setdefault((dtype, tuple(shape)), []).append(r)
        self.meta = {}
        for n in names:
            variants = seen[n]
            self.meta[n] = max(variants, key=lambda m: (len(variants[m]), -min(variants[m])))
            if len(variants) > 1:
                desc = "; ".join(f"{d} {list(s)} on ranks {rs}" for (d, s), rs in variants.items())
                self.problems[n] = f"the ranks disagree on its dtype or full shape: {desc}"
                self.blame[n] = sorted(r for m, rs in variants.items() if m != self.meta[n]
                                       for r in rs)
        self.totals = np.array([byte_length(self.meta[n][0], list(self.meta[n][1]))
                                for n in names], dtype=np.int64)

        # Every rank's runs, tensor indices made global.
        rows, self.run_base = [], [0]
        for r, p in enumerate(parts):
            runs = np.asarray(p["runs"], dtype=np.int64).reshape(-1, 5)
            remap = np.array([ids[n] for n in p["names"]], dtype=np.int64)
            g = np.zeros((len(runs), 6), dtype=np.int64)
            g[:, 0] = r
            g[:, 1] = np.arange(len(runs))
            g[:, 2] = remap[runs[:, 2]] if len(runs) else 0
            g[:, 3:5] = runs[:, 3:5]
            g[:, 5] = self.run_base[-1] + g[:, 1]
            rows.append(g)
            self.run_base.append(self.run_base[-1] + len(runs))
        G = np.concatenate(rows) if rows else np.zeros((0, 6), dtype=np.int64)
        self.parts_runs = [np.asarray(p["runs"], dtype=np.int64).reshape(-1, 5) for p in parts]
        self.holders = {n: [] for n in names}
        pairs = np.unique(G[:, 2] * self.world + G[:, 0]) if len(G) else np.zeros(0, np.int64)
        for t, r in zip((pairs // self.world).tolist(), (pairs % self.world).tolist()):
            self.holders[names[t]].append(r)
        # Runs sorted by tensor, start, length, then holder; distinct ranges are "intervals".
        G = G[np.lexsort((G[:, 1], G[:, 0], G[:, 4], G[:, 3], G[:, 2]))]
        self.G = G
        key = G[:, 2:5]
        new = np.ones(len(G), dtype=bool)
        new[1:] = np.any(key[1:] != key[:-1], axis=1)
        self.iv_first = np.flatnonzero(new)                       # first G row of each interval
        self.iv_count = np.diff(np.append(self.iv_first, len(G)))  # its holders
        self.iv_tensor, self.iv_start, self.iv_len = (G[self.iv_first, c] for c in (2, 3, 4))
        self._check_tiling()

        seg = segment_levels or {}
        self.segment_levels = {n: seg[n] for n in seg if n in ids}
        self._plan_local()
        self._plan_trees()

    # -- tiling -------------------------------------------------------------------------------

    def _check_tiling(self):
        t, s, n = self.iv_tensor, self.iv_start, self.iv_len
        first = np.ones(len(t), dtype=bool)
        first[1:] = t[1:] != t[:-1]
        prev_end = np.zeros(len(t), dtype=np.int64)
        prev_end[1:] = s[:-1] + n[:-1]
        prev_end[first] = 0
        last = np.ones(len(t), dtype=bool)
        last[:-1] = t[1:] != t[:-1]
        bad = (s != prev_end) | (last & (s + n != self.totals[t]))
        for i in np.flatnonzero(bad):
            name = self.names[t[i]]
            if name in self.problems:
                continue
            holders = self._interval_ranks(i)
            if s[i] > prev_end[i]:
                self.problems[name] = f"bytes [{prev_end[i]}, {s[i]}) are on no rank"
                self.blame[name] = self.holders[name]
            elif s[i] < prev_end[i]:
                before = self._interval_ranks(i - 1)
                self.problems[name] = (f"rank {holders[0]}'s bytes [{s[i]}, {s[i] + n[i]}) "
                                       f"overlap rank {before[0]}'s")
                self.blame[name] = sorted(set(holders) | set(before))
            else:
                end = s[i] + n[i]
                self.problems[name] = f"bytes [{end}, {self.totals[t[i]]}) are on no rank"
                self.blame[name] = self.holders[name]
        self.good = np.array([n not in self.problems for n in self.names], dtype=bool)

    def _interval_ranks(self, i):
        rows = self.G[self.iv_first[i]:self.iv_first[i] + self.iv_count[i]]
        return sorted({int(r) for r in rows[:, 0]})

    # -- the ranks' messages ------------------------------------------------------------------

    def _plan_local(self):
        pieces, frags, self.local, payload = [], [], [], 0
        caps = np.array([self.segment_levels.get(n, -1) for n in self.names] + [-1], np.int64)
        for r, runs in enumerate(self.parts_runs):
            tid_global = self.G[self.G[:, 0] == r]
            tid_global = tid_global[np.argsort(tid_global[:, 1])][:, 2]
            table = np.zeros((len(runs), 6), dtype=np.int64)
            table[:, 0:2] = runs[:, 0:2]
            table[:, 2:4] = runs[:, 3:5]
            table[:, 4] = self.totals[tid_global] if len(runs) else 0
            table[:, 5] = caps[tid_global] if len(runs) else 0
            header, body = sentry_ops.plan_runs(torch.from_numpy(table), self.algorithm, True)
            body = body.numpy()
            R, LR, B, K, F = (header[i] for i in (2, 3, 4, 5, 6))
            _, _, _, p, f = _sections(header, body, [(R, RUN_COLS), (LR, 1), (B, 1),
                                                     (K, PIECE_COLS), (F, FRAG_COLS)])
            self.local.append((header, body) if r == self.rank or self.keep_all else None)
            payload = max(payload, header[9])
            pieces.append(np.stack([np.full(K, r), self.run_base[r] + p[:, 1], p[:, 2],
                                    np.arange(K)], 1).astype(np.int64))
            frags.append(np.stack([np.full(F, r), self.run_base[r] + f[:, 4], f[:, 5], f[:, 2],
                                   f[:, 3]], 1).astype(np.int64))
        # All pieces / fragments, by global run: (rank, global run, first leaf or start, row or
        # length[, dst]).
        self.pieces = np.concatenate(pieces) if pieces else np.zeros((0, 4), dtype=np.int64)
        self.frags = np.concatenate(frags) if frags else np.zeros((0, 5), dtype=np.int64)
        runs_total = self.run_base[-1]
        self.piece_ptr = np.searchsorted(self.pieces[:, 1], np.arange(runs_total + 1))
        self.frag_ptr = np.searchsorted(self.frags[:, 1], np.arange(runs_total + 1))
        self.message_bytes = -(-payload // 16) * 16 + TRAILER

    # -- the trees to finish ------------------------------------------------------------------

    def _plan_trees(self):
        trees, rows = [], []  # (tensor, copy); chosen G rows per tree, one per interval
        t_first = np.searchsorted(self.iv_tensor, np.arange(len(self.names) + 1))
        for t in np.flatnonzero(self.good):
            lo, hi = t_first[t], t_first[t + 1]
            if hi == lo:
                continue
            counts = self.iv_count[lo:hi]
            for c in range(int(counts.max())):
                trees.append((t, c))
                rows.append(self.iv_first[lo:hi] + c % counts)
        self.tree_tensor = np.array([t for t, _ in trees], dtype=np.int64)
        self.tree_copy = np.array([c for _, c in trees], dtype=np.int64)
        self.tree_rows = rows
        levels = {q: self.segment_levels[self.names[t]] for q, (t, _) in enumerate(trees)
                  if self.names[t] in self.segment_levels}
        self.finish = self.finish_plan(self.tree_tensor, rows, levels)

    def finish_plan(self, tree_tensor, tree_rows, segment_levels=None):
        """(header, body, segments) of finishing trees: tree q is tensor tree_tensor[q] from
        the runs of G rows tree_rows[q] (one per interval)."""
        L = self.leaf
        Q = len(tree_tensor)
        counts = np.array([len(r) for r in tree_rows], dtype=np.int64)
        chosen = np.concatenate(tree_rows) if Q else np.zeros(0, dtype=np.int64)
        tree_of = np.repeat(np.arange(Q), counts)
        grun, rank = self.G[chosen, 5], self.G[chosen, 0]
        M = self.message_bytes
        # Pieces: (tree, first leaf, 0, gathered byte offset).
        idx, own = _expand(self.piece_ptr[grun], self.piece_ptr[grun + 1] - self.piece_ptr[grun])
        p = self.pieces[idx]
        items_p = np.stack([tree_of[own], p[:, 2], np.zeros(len(idx), dtype=np.int64),
                            p[:, 0] * M + 32 * p[:, 3]], 1) if len(idx) else np.zeros((0, 4), np.int64)
        # Fragments, split at leaf boundaries (one covers at most two leaves).
        idx, own = _expand(self.frag_ptr[grun], self.frag_ptr[grun + 1] - self.frag_ptr[grun])
        f = self.frags[idx]
        tree_f, start, length, goff = tree_of[own], f[:, 2], f[:, 3], f[:, 0] * M + f[:, 4]
        g0 = start // L
        cut = np.minimum(start + length, (g0 + 1) * L)
        spill = start + length > cut
        if np.any((start + length - 1) // L > g0 + 1):
            raise FormatError("internal: an edge fragment spans more than two leaves")
        frag_rows = np.concatenate([
            np.stack([tree_f, g0, start - g0 * L, cut - start, goff], 1),
            np.stack([tree_f[spill], g0[spill] + 1, np.zeros(int(spill.sum()), np.int64),
                      (start + length - cut)[spill], (goff + cut - start)[spill]], 1)])
        # An empty tensor's one leaf has no bytes at all.
        empty = np.flatnonzero(self.totals[tree_tensor] == 0)
        leaf_keys = np.concatenate([frag_rows[:, :2], np.stack([empty, np.zeros_like(empty)], 1)])
        frag_rows = frag_rows[np.lexsort((frag_rows[:, 2], frag_rows[:, 1], frag_rows[:, 0]))]
        leaves = np.unique(leaf_keys, axis=0) if len(leaf_keys) else np.zeros((0, 2), np.int64)
        frag_keys = frag_rows[:, 0] * (1 << 40) + frag_rows[:, 1]
        leaf_key = leaves[:, 0] * (1 << 40) + leaves[:, 1]
        fb = np.searchsorted(frag_keys, leaf_key, "left")
        fe = np.searchsorted(frag_keys, leaf_key, "right")
        items_l = np.stack([leaves[:, 0], leaves[:, 1], np.ones(len(leaves), np.int64),
                            np.arange(len(leaves))], 1)
        items = np.concatenate([items_p.reshape(-1, 4), items_l])
        items = items[np.lexsort((items[:, 1], items[:, 0]))]
        bounds = np.searchsorted(items[:, 0], np.arange(Q + 1))
        seg = segment_levels or {}
        trees = np.stack([self.totals[tree_tensor], bounds[:-1], bounds[1:],
                          np.array([seg.get(int(q), -1) for q in range(Q)], np.int64)], 1) \
            if Q else np.zeros((0, 4), np.int64)
        as_t = torch.from_numpy
        return sentry_ops.plan_finish(as_t(np.ascontiguousarray(trees, np.int64)),
                                      as_t(np.ascontiguousarray(items[:, 1:], np.int64)),
                                      as_t(np.ascontiguousarray(np.stack([fb, fe], 1), np.int64)),
                                      as_t(np.ascontiguousarray(frag_rows[:, [4, 2, 3]], np.int64)),
                                      self.algorithm)

    # -- what each holder sent ----------------------------------------------------------------

    def contribution(self, gathered, row):
        """The bytes G row `row`'s holder sent for its run: its piece values and edge bytes
        (gathered: the numpy bytes of all messages)."""
        M, grun, r = self.message_bytes, self.G[row, 5], self.G[row, 0]
        p = self.pieces[self.piece_ptr[grun]:self.piece_ptr[grun + 1]]
        f = self.frags[self.frag_ptr[grun]:self.frag_ptr[grun + 1]]
        out = b""
        if len(p):
            out += gathered[r * M + 32 * p[0, 3]:r * M + 32 * (p[-1, 3] + 1)].tobytes()
        if len(f):
            out += gathered[r * M + f[0, 4]:r * M + f[-1, 4] + f[-1, 3]].tobytes()
        return out




# ---------------------------------------------------------------------------------------------
# who is at fault (only when something differs; the same on every rank)


def _intervals(plan, t):
    return range(*np.searchsorted(plan.iv_tensor, [t, t + 1]))


def _classes(plan, gathered, t):
    """{interval: [[G rows], ...]} for the intervals of tensor t whose holders sent different
    bytes, each class of equal bytes listed largest first (ties: the lowest rank's first)."""
    out = {}
    for i in _intervals(plan, t):
        if plan.iv_count[i] < 2:
            continue
        by = {}
        for row in range(plan.iv_first[i], plan.iv_first[i] + plan.iv_count[i]):
            by.setdefault(plan.contribution(gathered, row), []).append(row)
        if len(by) > 1:
            out[i] = sorted(by.values(), key=lambda rows: (-len(rows), int(plan.G[rows[0], 0])))
    return out


def _ranks(plan, rows):
    return sorted({int(plan.G[r, 0]) for r in rows})


def finish_on_host(plan, gathered, tree_tensor, tree_rows, segment_levels=None):
    """(outputs [n, 32] numpy, segment rows) of finishing the given trees on the host."""
    header, body, segs = plan.finish_plan(np.asarray(tree_tensor, np.int64), tree_rows,
                                          segment_levels)
    g = torch.from_numpy(np.ascontiguousarray(gathered))
    out, status = sentry_ops.finish_runs(g, body, header, plan.algorithm)
    if status.any():
        raise FormatError("internal: a diagnosis plan read out of bounds")
    return out.numpy(), segs.numpy()


def attribute(plan, gathered, want, t):
    """(ranks, reason, settled) for tensor t, whose finished digest differs from `want`: the
    holders whose copy of some bytes differs from the copies that finish to `want` (settled),
    or all holders of the tensor when no copy tells them apart (not settled)."""
    classes = _classes(plan, gathered, t)
    name = plan.names[t]
    if not classes:
        copies = int(plan.iv_count[list(_intervals(plan, t))].max())
        return (plan.holders[name], "the bytes differ" + (" in every copy" if copies > 1 else ""),
                False)
    base = {i: cls[0] for i, cls in classes.items()}
    candidates = [base] + [{**base, i: other} for i, cls in classes.items() for other in cls[1:]]
    candidates = candidates[:256]
    lo = _intervals(plan, t).start
    rows = []
    for cand in candidates:
        chosen = plan.iv_first[list(_intervals(plan, t))].copy()
        for i, cls in cand.items():
            chosen[i - lo] = cls[0]
        rows.append(chosen)
    roots, _ = finish_on_host(plan, gathered, [t] * len(rows), rows)
    for cand, root in zip(candidates, roots):
        if root.tobytes() == want:
            blamed = _ranks(plan, [r for i, cls in classes.items() for c in cls
                                   if c is not cand[i] for r in c])
            return blamed, "their copy differs from the others, which match the digest", True
    blamed = _ranks(plan, [r for cls in classes.values() for c in cls for r in c])
    return blamed, "the bytes differ and its copies disagree; none matches the digest", True


def replica_disagreement(plan, gathered, t):
    """The ranks whose copy of tensor t's bytes differs from the majority's (no digest to
    compare with: a sending side's replicas)."""
    return _ranks(plan, [r for cls in _classes(plan, gathered, t).values() for c in cls[1:]
                         for r in c])


def run_segments(sub, engine, segments):
    """Second round on a plan `sub` of some tensors with pieces capped at their segment levels:
    {name: (ranks holding bytes of the segments that differ, where)}. Collective."""
    header, body = sub.local[sub.rank]
    srcs = [s if s.device == engine.device else s.to(engine.device) for s in engine.sources]
    msg, _ = sentry_ops.hash_runs(srcs, torch.from_numpy(body).to(engine.device), header,
                                  sub.message_bytes, sub.algorithm)
    gathered = collectives.gather_flat(msg.to(engine.comm), engine.group).cpu().numpy()
    Q = len(sub.tree_tensor)
    levels = {q: sub.segment_levels[sub.names[t]] for q, t in enumerate(sub.tree_tensor)}
    values, segs = finish_on_host(sub, gathered, sub.tree_tensor, sub.tree_rows, levels)
    L = sub.leaf
    out = {}
    for k, (q, lo, hi) in enumerate(segs):
        name = sub.names[sub.tree_tensor[q]]
        level, want = segments[name]
        if values[Q + k].tobytes() == want[lo >> level]:
            continue
        a, b = lo * L, min(hi * L, int(sub.totals[sub.tree_tensor[q]]))
        rows = sub.tree_rows[q]
        starts, ends = sub.G[rows, 3], sub.G[rows, 3] + sub.G[rows, 4]
        hit = rows[(starts < b) & (ends > a)]
        found, where = out.get(name, (set(), []))
        found |= set(_ranks(sub, hit))
        where.append(f"[{a}, {b})")
        out[name] = (found, where)
    return {n: (sorted(f), ", ".join(w[:3]) + (f" and {len(w) - 3} more" if len(w) > 3 else ""))
            for n, (f, w) in out.items()}
