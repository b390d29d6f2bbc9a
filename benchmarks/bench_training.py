"""Local training throughput: a naive per-client PyTorch loop vs hierfl's BatchedTrainer.

Workload W: synthetic classification (input_dim 32, 10 classes, 50 samples per client), the
compact MLP 32-64-ReLU-32-ReLU-10; every client starts from the global model and runs 2 local
epochs of SGD (batch 8, lr 0.01, cross-entropy); sample-weighted FedAvg after each round.
Both sides use the same per-client data orders (``epoch_orders``), so their final global
models agree to float rounding, and the benchmark prints how far apart they are.

Run: ``python benchmarks/bench_training.py`` (``--profile`` adds a pyinstrument profile of
one batched round at the largest size; ``--device cuda`` trains the batched side on a GPU;
``--mu 0.01`` adds FedProx's proximal term on both sides).

``--variants 1,0.5,0.25`` trains a HeteroFL width family of the compact MLP instead: client
``c`` trains variant ``c mod K`` from its slice of the global model (``FamilyTrainer``, one
batched trainer per variant), and the round ends with the slice average
(``aggregation.slice_fedavg``); the naive side trains each client's variant the same way
with a plain loop.

``--model dscnn`` or ``--model dscnn_bn`` trains the depthwise-separable CNN (without or with
static batch norm) on 64-feature data seen as 1x8x8 images, and
``--sizes 100x5`` picks the (clients x rounds) sizes.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hierfl.aggregation import Slice, fedavg, slice_fedavg
from hierfl.costs import prox_flops
from hierfl.learn.batched import BatchedTrainer
from hierfl.learn.data import FederatedData, make_data
from hierfl.learn.family import FamilyTrainer, ModelFamily, build_family
from hierfl.learn.models import build_model, model_stats
from hierfl.learn.trainer import ParamSpace, epoch_orders
from hierfl.scenario import DataConfig

SEED, CLASSES, SAMPLES = 0, 10, 50
EPOCHS, BATCH, LR = 2, 8, 0.01
SIZES = ((100, 5), (1000, 2))
"""(clients, rounds) pairs."""


MODEL = "compact"
SHAPES = {"compact": (32,), "dscnn": (1, 8, 8), "dscnn_bn": (1, 8, 8)}
"""Input shape of each model the benchmark trains (the CNNs see 64 features as 8x8)."""


def workload(clients: int, name: str = MODEL) -> tuple[FederatedData, nn.Module]:
    """Workload W's data for ``clients`` clients and the freshly initialised model ``name``."""
    shape = SHAPES[name]
    cfg = DataConfig(input_dim=int(np.prod(shape)), num_classes=CLASSES,
                     samples_per_device=(50, 50))
    counts = np.full(clients, SAMPLES, dtype=np.int64)
    data = make_data(cfg, counts, np.random.default_rng(SEED))
    data = replace(data, x=data.x.reshape(-1, *shape), x_test=data.x_test.reshape(-1, *shape),
                   input_shape=shape)
    return data, build_model(name, shape, CLASSES, SEED)


def naive_client(model: nn.Module, start: torch.Tensor, data: FederatedData, client: int,
                 round_: int, mu: float = 0.0) -> torch.Tensor:
    """One client's local training the usual way: deepcopy, DataLoader, torch.optim.SGD
    (with ``mu``, on the loss plus FedProx's (mu/2)||w - start||^2)."""
    local = copy.deepcopy(model)
    nn.utils.vector_to_parameters(start.clone(), local.parameters())  # else views of start
    anchors = [p.detach().clone() for p in local.parameters()]
    rows = data.device_slice(client)
    dataset = TensorDataset(data.x[rows], data.y[rows])
    optimizer = torch.optim.SGD(local.parameters(), lr=LR)
    for order in epoch_orders((SEED, round_, client), len(dataset), EPOCHS):
        for xb, yb in DataLoader(dataset, batch_size=BATCH, sampler=order.tolist()):
            optimizer.zero_grad()
            loss = F.cross_entropy(local(xb), yb)
            if mu:
                pairs = zip(local.parameters(), anchors, strict=True)
                loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in pairs)
            loss.backward()
            optimizer.step()
    return ParamSpace.of(local).vector(local)


def naive_round(model: nn.Module, data: FederatedData, global_flat: torch.Tensor,
                round_: int, mu: float = 0.0) -> torch.Tensor:
    """One FedAvg round the usual way: ``naive_client`` for every client, then FedAvg."""
    vectors = [naive_client(model, global_flat, data, c, round_, mu)
               for c in range(data.n_devices)]
    return fedavg(vectors, np.diff(data.offsets).tolist())


def naive_family_round(family: ModelFamily, variant_of: np.ndarray, data: FederatedData,
                       global_flat: torch.Tensor, round_: int, mu: float = 0.0) -> torch.Tensor:
    """One HeteroFL round the usual way: each client its variant from its slice, then the
    slice average."""
    results = {
        c: naive_client(family.variants[variant_of[c]].model,
                        global_flat[family.variants[variant_of[c]].index], data, c, round_, mu)
        for c in range(data.n_devices)
    }
    return _slice_average(family, variant_of, data, global_flat, results)


def family_round(trainer: FamilyTrainer, data: FederatedData, global_flat: torch.Tensor,
                 round_: int) -> torch.Tensor:
    """One HeteroFL round with hierfl: submit every client, collect (a flush per variant)."""
    jobs = [trainer.submit(c, global_flat, (SEED, round_, c)) for c in range(data.n_devices)]
    results = {c: job.result() for c, job in enumerate(jobs)}
    return _slice_average(trainer.family, trainer.variant_of, data, global_flat, results)


def _slice_average(family: ModelFamily, variant_of: np.ndarray, data: FederatedData,
                   global_flat: torch.Tensor, results: dict[int, torch.Tensor]) -> torch.Tensor:
    samples = np.diff(data.offsets)
    slices = []
    for k, variant in enumerate(family.variants):
        mine = np.flatnonzero(variant_of == k)
        if len(mine):
            rows = torch.stack([results[c] for c in mine])
            slices.append(Slice(variant.index, rows, samples[mine].tolist()))
    return slice_fedavg(global_flat, slices, deltas=False)


def batched_round(trainer: BatchedTrainer, data: FederatedData, global_flat: torch.Tensor,
                  round_: int) -> torch.Tensor:
    """One FedAvg round with hierfl: submit every client, collect (one batched flush)."""
    jobs = [trainer.submit(c, global_flat, (SEED, round_, c)) for c in range(data.n_devices)]
    weights = np.diff(data.offsets).tolist()
    return fedavg([job.result() for job in jobs], weights)


def timed(rounds: int, one_round, start: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """Wall and CPU seconds for ``rounds`` rounds from ``start``, and the final global model."""
    flat = start
    wall, cpu = time.perf_counter(), time.process_time()
    for round_ in range(rounds):
        flat = one_round(flat, round_)
    return time.perf_counter() - wall, time.process_time() - cpu, flat


def peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 ``torch.mm`` rate on this machine, GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _row(label: str, updates: int, wall_s: float, cpu_s: float, flops: float,
         peak: float) -> float:
    rate = updates / wall_s
    gflops = rate * flops / 1e9
    print(f"  {label:24s} {wall_s:8.3f} {cpu_s:8.3f} {rate:10.0f} {updates / cpu_s:12.0f} "
          f"{gflops:8.2f} {gflops / peak:8.1%}")
    return rate


def bench(clients: int, rounds: int, device: str, peak: float, naive: bool,
          repeat: int, widths: list[float] | None = None, mu: float = 0.0,
          name: str = MODEL) -> None:
    """Time both sides on one size (the batched side best of ``repeat``) and print figures;
    with ``widths``, a HeteroFL family whose client ``c`` trains variant ``c mod K``; with
    ``mu``, FedProx on both sides; ``name`` is the model."""
    data, model = workload(clients, name)
    start = ParamSpace.of(model).vector(model)
    if widths is None:
        stats = model_stats(model, data.input_shape)
        flops = 3 * stats.forward_flops * SAMPLES * EPOCHS
        params = stats.n_params
        trainer = BatchedTrainer(model, data, EPOCHS, BATCH, LR, device, mu)
        path = trainer.path
        one_round = partial(batched_round, trainer, data)
        naive_one = partial(naive_round, model, data, mu=mu)
    else:
        family = build_family(name, data.input_shape, CLASSES, SEED, widths)
        variant_of = np.arange(clients) % len(widths)
        forward = np.array([v.stats.forward_flops for v in family.variants])[variant_of]
        flops = 3 * float(forward.mean()) * SAMPLES * EPOCHS
        params = float(np.array([v.stats.n_params for v in family.variants])[variant_of].mean())
        trainer = FamilyTrainer(family, variant_of, data, EPOCHS, BATCH, LR, device, mu)
        path = "+".join(sorted({t.path for t in trainer.trainers}))
        print(f"width family {family.widths}: client c trains variant c mod {len(widths)}")
        one_round = partial(family_round, trainer, data)
        naive_one = partial(naive_family_round, family, variant_of, data, mu=mu)
    if mu:
        flops += prox_flops(params, SAMPLES, EPOCHS, BATCH)
    updates = clients * rounds
    print(f"N={clients} clients x {rounds} rounds = {updates} client updates "
          f"({flops / 1e6:.2f} MFLOP each)")
    print(f"  {'':24s} {'wall_s':>8s} {'cpu_s':>8s} {'updates/s':>10s} {'updates/cpu_s':>12s} "
          f"{'GFLOP/s':>8s} {'of peak':>8s}")
    wall_s, cpu_s, batched = min(
        (timed(rounds, one_round, start) for _ in range(repeat)), key=lambda timing: timing[0])
    rate = _row(f"hierfl batched ({path})", updates, wall_s, cpu_s, flops, peak)
    if not naive:
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the naive loop's best setting: its ops are too small to split
    try:
        wall_s, cpu_s, reference = timed(rounds, naive_one, start)
    finally:
        torch.set_num_threads(threads)
    naive_rate = _row("naive loop (1 thread)", updates, wall_s, cpu_s, flops, peak)
    diff = float((batched - reference).abs().max())
    print(f"  speed-up {rate / naive_rate:.1f}x; "
          f"max |global batched - global naive| = {diff:.2e}")


def profile(clients: int, device: str, name: str = MODEL) -> None:
    """Print a pyinstrument profile of one batched round."""
    from pyinstrument import Profiler

    data, model = workload(clients, name)
    start = ParamSpace.of(model).vector(model)
    trainer = BatchedTrainer(model, data, EPOCHS, BATCH, LR, device)
    batched_round(trainer, data, start, 0)
    profiler = Profiler(interval=0.0005)
    with profiler:
        batched_round(trainer, data, start, 1)
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device of the batched side")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    parser.add_argument("--profile", action="store_true", help="profile one batched round")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many batched runs")
    parser.add_argument("--variants", help="HeteroFL widths of the compact MLP, e.g. 1,0.5,0.25")
    parser.add_argument("--mu", type=float, default=0.0, help="FedProx proximal weight")
    parser.add_argument("--model", default=MODEL, choices=sorted(SHAPES), help="model trained")
    parser.add_argument("--sizes", help="clients x rounds, comma-separated, e.g. 100x5,1000x2")
    args = parser.parse_args()
    sizes = SIZES if not args.sizes else [
        tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")
    ]
    widths = [float(w) for w in args.variants.split(",")] if args.variants else None
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = peak_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"fp32 peak {peak:.1f} GFLOP/s (2048^3 torch.mm, best of 5)")
    warm_data, warm_model = workload(8)  # first-call costs (vmap, MKL, DataLoader) not timed
    warm_start = ParamSpace.of(warm_model).vector(warm_model)
    trainer = BatchedTrainer(warm_model, warm_data, EPOCHS, BATCH, LR, args.device)
    batched_round(trainer, warm_data, warm_start, 0)
    naive_round(warm_model, warm_data, warm_start, 0)
    for clients, rounds in sizes:
        bench(clients, rounds, args.device, peak, not args.no_naive, args.repeat, widths,
              args.mu, args.model)
    if args.profile:
        profile(sizes[-1][0], args.device, args.model)


if __name__ == "__main__":
    main()
