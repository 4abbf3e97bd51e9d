"""What the library does under `torch.distributed`: data-parallel training and SG-MCMC,
chain-parallel MCMC. There is no launcher, scheduler or transport of our own:

    torchrun --nproc_per_node 4 train.py                      # one machine, 4 processes
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d \\
             --rdzv_endpoint HOST:29400 --rdzv_id run1 train.py   # 2 machines

and `train.py` is the single-process script, unchanged. The process group is
joined on first use from torchrun's environment (MASTER_ADDR, MASTER_PORT,
RANK, WORLD_SIZE; gloo on the CPU, NCCL with one GPU per rank, LOCAL_RANK);
without those variables, or with WORLD_SIZE=1, every function here is the
identity and the library runs as one process.

- `inference.Trainer`: each batch it is given is the global batch; each rank
  trains on its rows (`shard`), the cost and bound reported are the global
  batch's, the gradients of every template's parameters are averaged over
  ranks weighted by shard size (`average_gradients`: one all-reduce; DDP does
  not fit templates, whose parameters appear on their first call and which
  are not called through `forward`), new parameters and buffers are copied
  from rank 0 when they appear (`broadcast_from_main`), and each rank draws
  its own model noise (`own_noise`) from the common random stream. Buffers
  then stay each rank's own (moving averages of its rows, persistent chains:
  averaging those would mix chain states). Rank 0 alone writes checkpoints
  (its buffers) and shows progress; a checkpoint resumes at any world size.
  The batches must be the same on every rank: a callable `epoch -> batches`
  that shuffles with torch's global generator is (the common stream), and so
  is `shuffled_batches` (DistributedSampler's semantics: a permutation seeded
  by seed + epoch).
- Held-out metrics on shards: `shard(test_data)` on each rank, then
  `mean(per_example_values)` for the mean over every rank's rows.
- SG-MCMC (`SGLD`, `SGHMC`, ...): the minibatch gradient is averaged over
  ranks (`averaged`); with one seed on every rank the noise is the same, so
  the chain is the one one process runs on the union of the minibatches.
- `inference.mcmc.run`: chains are split over ranks in contiguous blocks
  (`own_chains`); each rank runs its block as one batch and every rank gets
  every chain back, in chain order (`all_chains`). The start, the initial step
  size search and NUTS's per-chain random streams are drawn for all chains on
  every rank, so NUTS's chain k is the same whatever the world size (the step
  size search at the end of each mass matrix window draws from the chain's
  own stream too).

A rank that dies or hangs makes the others raise `RankFailedError` naming it
(each rank beats a heartbeat in the rendezvous store) within the timeout
(`init(timeout=...)`, or PPL_DISTRIBUTED_TIMEOUT seconds; default 300); a bad
launch raises `LaunchError` saying what is wrong.
"""
import contextlib
import dataclasses
import datetime
import hashlib
import os
import threading
import time

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["LaunchError", "RankFailedError", "init", "is_active", "rank", "world_size",
           "is_main", "shard", "shard_with_share", "shuffled_batches", "mean",
           "broadcast_from_main",
           "average_gradients", "mean_over_ranks", "own_noise", "averaged", "own_chains",
           "all_chains", "rank_path", "on_main"]

_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
_HEARTBEAT_S = 1.
_DEFAULT_TIMEOUT_S = 300.


class LaunchError(RuntimeError):
    """The processes were not launched as torch.distributed needs (environment, world size)."""


class RankFailedError(RuntimeError):
    """Another rank died or stopped answering during a collective."""


class _Session:
    """The process group we joined, and the heartbeat that lets the others tell we live."""

    def __init__(self):
        self.active = False
        self.rank, self.world = 0, 1
        self.collectives = 0  # collectives this rank has entered (named in the heartbeat)
        self.monitor = None   # a store client of our own, to read the others' heartbeats
        self.timeout = _DEFAULT_TIMEOUT_S


_session = None


def _env_int(name):
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"environment variable {name}={value!r} is not an integer") from None


def _launch_settings():
    """(rank, world size) from torchrun's environment, or None where it sets none of it."""
    present = [name for name in _ENV if os.environ.get(name)]
    if not present:
        return None
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing:
        raise LaunchError(f"a torch.distributed launch sets {', '.join(_ENV)}, but "
                          f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set "
                          f"(set: {', '.join(present)}): start the script with torchrun "
                          f"(`torchrun --nproc_per_node N script.py`), or unset "
                          f"{', '.join(present)} to run as one process")
    rank_, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if world < 1 or not 0 <= rank_ < world:
        raise LaunchError(f"RANK={rank_} with WORLD_SIZE={world}: a rank must be in 0.."
                          f"{world - 1} (world size mismatch between the processes?)")
    return rank_, world


def init(*, backend=None, timeout=None):
    """Join the process group torchrun's environment describes (once; later calls do
    nothing). Returns whether more than one process runs.

    backend: 'gloo' (CPU) or 'nccl' (one GPU per rank: LOCAL_RANK's); default
    NCCL where CUDA is available, else gloo. timeout: seconds a collective may
    wait for the other ranks (default PPL_DISTRIBUTED_TIMEOUT, else 300).
    A process group the caller made already is used as it is.
    """
    global _session
    if _session is not None:
        return _session.active
    session = _Session()
    if timeout is None:
        timeout = float(os.environ.get("PPL_DISTRIBUTED_TIMEOUT", _DEFAULT_TIMEOUT_S))
    session.timeout = float(timeout)
    settings = _launch_settings()
    if dist.is_available() and dist.is_initialized():
        session.rank, session.world = dist.get_rank(), dist.get_world_size()
        if settings is not None and settings[1] != session.world:
            raise LaunchError(f"the process group has {session.world} ranks but WORLD_SIZE="
                              f"{settings[1]}: world size mismatch")
    elif settings is not None and settings[1] > 1:
        session.rank, session.world = settings
        session.monitor = _join(session, backend)
    session.active = session.world > 1
    _session = session
    if session.monitor is not None:
        threading.Thread(target=_beat, args=(session,), daemon=True,
                         name="ppl-heartbeat").start()
    return session.active


def _store(world, timeout, host=False):
    """A client of the rendezvous store (torchrun's agent hosts it, or rank 0 does)."""
    store = dist.TCPStore(os.environ["MASTER_ADDR"], _env_int("MASTER_PORT"), world,
                          is_master=host, timeout=datetime.timedelta(seconds=timeout),
                          wait_for_workers=False)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"/ppl/attempt_{attempt}", store)


def _join(session, backend):
    """init_process_group on our own store client; returns a second client, the monitor's."""
    rank_, world, timeout = session.rank, session.world, session.timeout
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        store = _store(world, timeout, host=rank_ == 0 and not agent)
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, store=store, rank=rank_, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        dist.barrier()  # every rank has joined: the group is complete
        return _store(world, timeout)
    except (RuntimeError, ValueError) as error:  # DistStoreError, DistNetworkError, ...
        raise LaunchError(f"rank {rank_} could not join the {world} processes at {where} "
                          f"within {timeout:g} s ({type(error).__name__}: {error}); were all "
                          f"WORLD_SIZE={world} processes started (torchrun --nproc_per_node "
                          f"x --nnodes = WORLD_SIZE) with the same MASTER_ADDR/MASTER_PORT?") \
            from error


def _beat(session):
    """Write (beats, collectives entered) under our rank's key, every second, for ever."""
    key, beats = f"heartbeat/{session.rank}", 0
    with contextlib.suppress(Exception):  # the store went away: the run is over
        while True:
            beats += 1
            session.monitor.set(key, f"{beats} {session.collectives}")
            time.sleep(_HEARTBEAT_S)


def _heartbeats(session):
    """rank -> (beats, collectives entered) of every other rank ((0, 0): none written)."""
    keys = {r: f"heartbeat/{r}" for r in range(session.world) if r != session.rank}
    return {r: tuple(map(int, session.monitor.get(key).split()))
            if session.monitor.check([key]) else (0, 0) for r, key in keys.items()}


def _failure(session, what, error):
    """RankFailedError naming the rank(s) that died or lag, after a collective failed."""
    if session.monitor is None:
        return RankFailedError(f"rank {session.rank}: {what} failed ({error}): another rank "
                               f"died or hung (with the process group made by "
                               f"inference.distributed the rank is named)")
    try:
        before = _heartbeats(session)
        time.sleep(3 * _HEARTBEAT_S)
        after = _heartbeats(session)
    except Exception as store_error:  # noqa: BLE001: the store is gone with its host
        return RankFailedError(
            f"rank {session.rank}: {what} failed ({error}), and the rendezvous store at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} is unreachable "
            f"({store_error}): rank 0, which hosts it outside torchrun, died")
    dead = [r for r in after if after[r][0] == before[r][0]]
    if dead:
        return RankFailedError(
            f"rank {', '.join(map(str, dead))} died (no heartbeat for {3 * _HEARTBEAT_S:g} s) "
            f"while rank {session.rank} waited for it in {what}; see that rank's own error")
    behind = [r for r in after if after[r][1] < session.collectives]
    if behind:
        return RankFailedError(
            f"rank {', '.join(map(str, behind))} did not join {what} within the timeout "
            f"({session.timeout:g} s); it is alive: stuck, slow, or running other code")
    return RankFailedError(f"rank {session.rank}: {what} failed ({error}); every rank is alive")


def _collective(what, fn, *args, **kwargs):
    """Run one collective; a failure becomes a RankFailedError naming the rank at fault."""
    session = _session
    session.collectives += 1
    try:
        return fn(*args, **kwargs)
    except RuntimeError as error:  # DistBackendError, gloo's connection errors, timeouts
        raise _failure(session, what, error) from error


# -- who we are ---------------------------------------------------------------
def is_active():
    """Whether more than one process runs (joining torchrun's group on first call)."""
    return init()


def rank():
    init()
    return _session.rank


def world_size():
    init()
    return _session.world


def is_main():
    """Whether this process writes files and shows progress (rank 0)."""
    return rank() == 0


def _device():
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


def on_main(value):
    """Rank 0's `value` (a bool or number) on every rank, e.g. whether a file exists."""
    if not is_active():
        return value
    out = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    _collective("broadcasting rank 0's decision", dist.broadcast, out, src=0)
    return type(value)(out.item())


# -- data ---------------------------------------------------------------------
def _rows(batch):
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    if isinstance(batch, (list, tuple)):
        return next((n for n in map(_rows, batch) if n is not None), None)
    if isinstance(batch, dict):
        return next((n for n in map(_rows, batch.values()) if n is not None), None)
    return None


def _part(batch, index, parts):
    if isinstance(batch, torch.Tensor) and batch.dim():
        return torch.tensor_split(batch, parts)[index]
    if isinstance(batch, (list, tuple)):
        items = [_part(item, index, parts) for item in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    if isinstance(batch, dict):
        return {key: _part(value, index, parts) for key, value in batch.items()}
    return batch


def shard(batch):
    """This rank's rows of `batch` (a tensor, or a tuple / list / dict of them): the rank-th
    of `world_size()` contiguous parts along axis 0 (`torch.tensor_split`)."""
    return _part(batch, rank(), world_size()) if is_active() else batch


def shard_with_share(batch):
    """(this rank's rows, their share of the global batch's rows). Every rank must be given
    the same global batch: its size and a checksum are compared, and every rank raises
    ValueError when they differ (before any update)."""
    if not is_active():
        return batch, 1.
    rows = _rows(batch)
    if rows is None:
        raise ValueError("under torch.distributed the Trainer splits each batch along its "
                         "first axis: give it tensors (or tuples / lists / dicts of them)")
    check = torch.tensor([rows, _checksum(batch)], dtype=torch.float64)
    both = torch.stack([check, -check]).to(_device())
    _collective("checking the batches", dist.all_reduce, both, op=dist.ReduceOp.MAX)
    if not torch.equal(both[0].cpu(), -both[1].cpu()):
        raise ValueError(f"rank {rank()}: the ranks were given different batches (rows or "
                         f"values differ): under torch.distributed every rank must iterate "
                         f"the same global batches, each rank takes its rows; shuffle with "
                         f"a generator seeded alike on every rank "
                         f"(inference.distributed.shuffled_batches) and do not shard yourself")
    if rows < world_size():
        raise ValueError(f"a batch of {rows} rows cannot be split over {world_size()} ranks: "
                         f"each rank needs at least one row (a bigger batch, or drop_last)")
    part = shard(batch)
    return part, _rows(part) / rows


def _checksum(batch):
    """One float summarizing the batch's values (equal batches give equal sums)."""
    if isinstance(batch, torch.Tensor):
        return float(batch.detach().double().nan_to_num().sum()) if batch.numel() else 0.
    if isinstance(batch, (list, tuple)):
        return sum(_checksum(item) * (i + 1) for i, item in enumerate(batch))
    if isinstance(batch, dict):
        return sum(_checksum(value) * (i + 1) for i, value in enumerate(batch.values()))
    return 0.


def shuffled_batches(data, batch_size, *, seed=0, drop_last=False):
    """A callable `epoch -> list of global batches` for `Trainer.fit`, with
    `DistributedSampler`'s semantics: each epoch's permutation comes from a generator
    seeded with seed + epoch, so it is the same on every rank (which takes its rows of
    each batch) and on resume. data: a tensor or a tuple of tensors of equal length."""
    items = data if isinstance(data, (tuple, list)) else (data,)
    n = items[0].shape[0]

    def epoch_batches(epoch):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        stop = n - n % batch_size if drop_last else n
        chunks = [order[i:i + batch_size] for i in range(0, stop, batch_size)]
        return [tuple(item[c] for item in items) if isinstance(data, (tuple, list))
                else data[c] for c in chunks]
    return epoch_batches


def mean(values):
    """The mean of per-example `values` over every rank's rows (each rank passes its
    shard's values, any shape): e.g. a test ELBO or IS log-likelihood computed on shards."""
    values = torch.as_tensor(values)
    if not is_active():
        return values.mean()
    total = torch.tensor([values.detach().double().sum().item(), values.numel()],
                         dtype=torch.float64, device=_device())
    _collective("reducing a held-out metric", dist.all_reduce, total)
    return (total[0] / total[1]).to(values.dtype if values.is_floating_point()
                                    else torch.float64).cpu()


# -- training -----------------------------------------------------------------
def _state_tensors(modules):
    """Each parameter and buffer of `modules` once, in a fixed order."""
    seen = set()
    for module in modules.values():
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                yield tensor


def broadcast_from_main(modules):
    """Copy every parameter and buffer of `modules` (name -> nn.Module) from rank 0, as
    DDP does at construction (templates make their layers on their first call), and rank
    0's torch random state (the common stream, as one process has it after the call)."""
    if not is_active():
        return
    with torch.no_grad():
        for tensor in _state_tensors(modules):
            _collective("copying rank 0's parameters", dist.broadcast, tensor, src=0)
    _sync_rng()


def _sync_rng():
    """torch's (CPU) generator of rank 0 on every rank."""
    state = torch.get_rng_state().to(_device())
    _collective("copying rank 0's random state", dist.broadcast, state, src=0)
    torch.set_rng_state(state.cpu())


def mean_over_ranks(values, share):
    """Weighted means over ranks of floats (None stays None): sum_r share_r * value_r."""
    if not is_active():
        return values
    given = [v for v in values if v is not None]
    total = torch.tensor(given, dtype=torch.float64, device=_device()) * share
    _collective("reducing the cost", dist.all_reduce, total)
    totals = iter(total.tolist())
    return tuple(None if v is None else next(totals) for v in values)


def average_gradients(params, share):
    """grad <- sum_r share_r * grad_r for `params` (share_r: rank r's share of the global
    batch's rows), in one all-reduce per dtype. A parameter no rank computed a gradient
    for keeps grad None."""
    if not is_active():
        return
    groups = {}
    for param in params:
        if param.grad is not None and param.grad.is_sparse:
            raise ValueError("sparse gradients are not averaged across ranks")
        groups.setdefault(param.dtype, []).append(param)
    for dtype, group in groups.items():
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * share
                 for p in group]
        used = torch.tensor([p.grad is not None for p in group], dtype=dtype)
        flat = torch.cat([t.to(_device()) for t in grads + [used]])
        _collective("averaging the gradients", dist.all_reduce, flat)
        offset = 0
        for param, had_grad in zip(group, (flat[-len(group):] > 0).tolist()):
            size = param.numel()
            param.grad = flat[offset:offset + size].view_as(param).to(param.device) \
                if had_grad else None
            offset += size


def _rank_seed():
    """A seed of this rank's own, from one draw of torch's generator (the common stream:
    the same draw on every rank)."""
    draw = int(torch.randint(-2 ** 63, 2 ** 63 - 1, (), dtype=torch.int64))
    digest = hashlib.sha256(f"{draw} {rank()}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextlib.contextmanager
def own_noise(enabled=True):
    """Inside: torch's generator seeded for this rank from one draw of the common stream
    (the same draw on every rank), so ranks sample independent model noise; after: the
    common stream, as every rank has it (batches shuffled with it stay the same).
    enabled=False (the step that makes the templates' layers: they are initialized from
    the common stream, as in one process): the common stream inside, synced from rank 0
    after by `broadcast_from_main`."""
    if not (enabled and is_active()):
        yield
        return
    seed = _rank_seed()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# -- SG-MCMC ------------------------------------------------------------------
def averaged(gradient):
    """`gradient(position) -> (log_joint, grads)` averaged over ranks (each rank's
    minibatch estimate, scaled by N / its batch size): the estimate on the union of the
    ranks' minibatches (equal sizes)."""
    if not is_active():
        return gradient

    def mean_gradient(position):
        value, grads = gradient(position)
        flat = torch.cat([value.reshape(1).to(grads[next(iter(grads))].dtype)]
                         + [g.reshape(-1) for g in grads.values()]).to(_device())
        _collective("averaging the SG-MCMC gradient", dist.all_reduce, flat)
        flat = (flat / world_size()).to(value.device)
        out, offset = {}, 1
        for name, grad in grads.items():
            out[name] = flat[offset:offset + grad.numel()].view_as(grad)
            offset += grad.numel()
        return flat[0].to(value.dtype), out
    return mean_gradient


# -- chain-parallel MCMC ------------------------------------------------------
def _block_sizes(n_chains):
    """How many chains each rank runs: contiguous blocks, as `torch.tensor_split`."""
    return [len(part) for part in torch.tensor_split(torch.arange(n_chains), world_size())]


def rank_path(path):
    """An MCMC checkpoint path of this rank's own (`path.rank1of4`): each rank saves its
    chains; a resume needs the same world size."""
    if path is None or not is_active():
        return path
    return f"{os.fspath(path)}.rank{rank()}of{world_size()}"


def own_chains(kernel, potential, state, step_size, metric):
    """This rank's block of the chains, set up for all of them on every rank: returns
    (potential, state, step_size, metric) for the block, NUTS's random streams drawn for
    every chain (as one process would at its first transition) and kept for the block.
    What the chains draw from torch's generator (HMC's momenta) comes from a generator
    per rank: independent across ranks, but dependent on the world size (`all_chains`
    syncs the generators).
    """
    if not is_active():
        return potential, state, step_size, metric
    from inference.mcmc import NUTS, HMCState, Potential, nuts
    from inference.mcmc.adaptation import make_metric
    n = potential.n_chains
    if len(potential.space.chain_shape) != 1:
        raise ValueError(f"chain-parallel MCMC splits one chain axis; the chains have axes "
                         f"{tuple(potential.space.chain_shape)}: give `init` with one")
    if n < world_size():
        raise ValueError(f"{n} chains cannot be split over {world_size()} ranks: run at "
                         f"least one chain per rank")
    sizes = _block_sizes(n)
    start = sum(sizes[:rank()])
    stop = start + sizes[rank()]
    rng = nuts.new_streams(n, state.position.device)[start:stop] if isinstance(kernel, NUTS) \
        else None
    block = slice(start, stop)
    constrained = {k: v[block] for k, v in potential.constrain(state.position).items()}
    log_joint = potential.log_joint
    local = Potential(log_joint.plain if log_joint.meta_bn is None else log_joint.meta_bn,
                      log_joint.observed, constrained, potential.supports)
    torch.manual_seed(_rank_seed())  # momenta drawn from torch's generator: one per rank
    return (local, HMCState(state.position[block], state.log_prob[block], state.grad[block],
                            rng), step_size[block], make_metric(metric.inverse_mass[block]))


def all_chains(result, potential):
    """Every rank's `MCMCResult` joined in chain order (on every rank), with `potential`,
    the one for all chains."""
    if not is_active():
        return result
    from inference.mcmc import HMCState
    sizes = _block_sizes(potential.n_chains)
    state = result.last_state
    joined = _gathered({"samples": result.samples, "stats": result.stats,
                        "warmup_stats": result.warmup_stats, "step_size": result.step_size,
                        "inverse_mass_matrix": result.inverse_mass_matrix,
                        "last_state": (state.position, state.log_prob, state.grad, state.rng)},
                       sizes)
    _sync_rng()
    return dataclasses.replace(result, **{k: v for k, v in joined.items() if k != "last_state"},
                               last_state=HMCState(*joined["last_state"]), potential=potential)


def _gathered(value, sizes):
    """Every rank's `value` (tensors or arrays, chains first; in dicts and tuples) joined
    along the chains: rank r holds sizes[r] of them (padded to the largest to gather)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _gathered(v, sizes) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_gathered(v, sizes) for v in value)
    if isinstance(value, np.ndarray):
        return _gathered(torch.from_numpy(value), sizes).numpy()
    wire = torch.uint8 if value.dtype == torch.bool else value.dtype  # gloo sends no bool
    padded = value.new_zeros((max(sizes),) + value.shape[1:], dtype=wire, device=_device())
    padded[:len(value)] = value.to(padded)
    parts = [torch.empty_like(padded) for _ in sizes]
    _collective("gathering the chains", dist.all_gather, parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]) \
        .to(device=value.device, dtype=value.dtype)
