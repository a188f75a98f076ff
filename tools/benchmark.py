"""Benchmark the ConvNeXt backbone against Hugging Face's ConvNextBackbone on identical weights.

Examples:
    # the issue's goals (512x512 fp32 / bf16, with_cp at 800x1216), a table and a JSON file
    python tools/benchmark.py --sizes 512 --json work_dirs/bench_512.json
    python tools/benchmark.py --sizes 800x1216 --tasks train --precisions fp32 \
        --variants with_cp --memory --json work_dirs/bench_cp.json
    # whole models (B detector and segmenter), inference only
    python tools/benchmark.py --whole-model detector segmenter --whole-model-modes infer \
        --sizes 800x1216 --tasks --json work_dirs/bench_models.json
    # ChannelsLastHook's RoIAlign against mmcv's, one thread
    python tools/benchmark.py --tasks --roi-align --threads 1 --clock cpu --repeats 7
"""
import argparse
import json
import os
import sys

from convnext_dense.extras.benchmark.report import (check_goals, check_json_path, format_machine,
                                                    format_summary, format_table,
                                                    format_whole_model_table, write_json)
from convnext_dense.extras.benchmark.roi_align_speed import CASES as ROI_ALIGN_CASES
from convnext_dense.extras.benchmark.runner import PRECISION_FAMILIES, VARIANTS, BenchmarkConfig
from convnext_dense.model.archs import resolve_arch
from convnext_dense.runtime.cli_options import positive_int


def parse_size(text: str):
    parts = text.lower().split('x')
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not N or HxW (e.g. 512, 800x1216)")
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2:
        raise argparse.ArgumentTypeError(f"size '{text}' is not N or HxW (e.g. 512, 800x1216)")
    return tuple(sizes)


def parse_arch(text: str):
    arch = text
    if text.lstrip().startswith('{'):
        try:
            arch = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f'--arch {text!r} is not valid JSON: {err}')
    try:
        resolve_arch(arch)  # a name or depths / channels the backbone takes, before any timing
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err))
    return arch


def parse_shape(text: str):
    try:
        shape = tuple(int(p) for p in text.lower().split('x'))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"matmul shape '{text}' is not MxKxN (e.g. 2048x2048x2048)")
    return shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='base', type=parse_arch,
                        help="arch name, or JSON such as '{\"depths\": [1, 1, 2, 1], "
                             "\"channels\": [16, 32, 64, 128]}'")
    parser.add_argument('--sizes', nargs='+', type=parse_size, default=[(512, 512)])
    parser.add_argument('--tasks', nargs='*', default=['infer', 'train'],
                        choices=['infer', 'train'])
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'],
                        choices=PRECISION_FAMILIES)
    parser.add_argument('--variants', nargs='+', default=['eager'], choices=VARIANTS,
                        help="with_cp: training with activation checkpointing; mlp_routes: fp32 "
                             "inference with each route of the fused block MLP (oneDNN with "
                             "GELU fused or apart, BLAS); "
                             "train_routes: the fp32 training step with each route of the "
                             "blocks' matmuls")
    parser.add_argument('--peers', nargs='*', default=['huggingface', 'timm', 'mmpretrain'])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--drop-path-rate', type=float, default=0.0,
                        help='training: stochastic depth rising to this rate at the last block, '
                             'in every implementation (the configs train with 0.4-0.7)')
    parser.add_argument('--threads', type=positive_int,
                        help='torch threads (default: torch decides)')
    parser.add_argument('--clock', default='wall', choices=['wall', 'cpu'],
                        help="'cpu': process CPU time, robust to other load with --threads 1")
    parser.add_argument('--memory', action='store_true',
                        help='peak memory of each training case, each in a fresh process')
    parser.add_argument('--matmul-shapes', nargs='+', type=parse_shape,
                        help='MxKxN products for the matmul peak (default: the model\'s own)')
    parser.add_argument('--whole-model', nargs='*', default=[],
                        choices=['detector', 'segmenter'])
    parser.add_argument('--whole-model-modes', nargs='+', default=['infer', 'train'],
                        choices=['infer', 'train'])
    parser.add_argument('--malloc', default='keep', choices=['keep', 'glibc'],
                        help="keep: glibc keeps freed memory, as tools/train.py and tools/test.py "
                             "set it on CPU (convnext_dense.runtime.allocator); glibc: its "
                             "defaults. Either way all implementations share the process")
    parser.add_argument('--roi-align', nargs='*', metavar='CASE',
                        choices=list(ROI_ALIGN_CASES),
                        help='ChannelsLastHook\'s channels-last RoIAlign against mmcv\'s, '
                             'forward and forward + backward (no CASE: all of '
                             f"{', '.join(repr(c) for c in ROI_ALIGN_CASES)})")
    parser.add_argument('--json', help='write all results here')
    parser.add_argument('--onnx', nargs='+', choices=['backbone', 'segmenter', 'detector'],
                        help='onnxruntime vs PyTorch eager, fp32, 1 thread and all cores: the '
                             'backbone at the first --sizes, the demo segmenter / detector')
    args = parser.parse_args(argv)
    try:  # bad sizes, peers, batch and an unwritable --json: said now, not after the run
        args.config = BenchmarkConfig(
            arch=args.arch, sizes=args.sizes, tasks=args.tasks, precisions=args.precisions,
            variants=args.variants, peers=args.peers, repeats=args.repeats, warmup=args.warmup,
            batch=args.batch, memory=args.memory, clock=args.clock,
            matmul_shapes=args.matmul_shapes, drop_path_rate=args.drop_path_rate)
        check_json_path(args.json)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from convnext_dense.runtime.allocator import OPT_OUT_VARIABLE, keep_freed_memory
    malloc = keep_freed_memory(dict(os.environ, **{OPT_OUT_VARIABLE: args.malloc}))
    from convnext_dense.runtime.compile_cache import keep_compile_cache_per_capability
    compile_cache = keep_compile_cache_per_capability()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from convnext_dense.extras.benchmark.runner import run_benchmark, summarize

    def log(line):
        print(f'... {line}', file=sys.stderr, flush=True)

    if compile_cache:
        log(f'torch.compile caches in {compile_cache} (ATEN_CPU_CAPABILITY is set)')

    results = {}
    if args.tasks:
        results = run_benchmark(args.config, log)
        results['machine']['malloc'] = malloc
        results['summary'] = summarize(results)
        results['goals'] = check_goals(results['summary'],
                                       results['machine']['native_bf16'])
        print(f"Machine: {format_machine(results)}\n")
        print(format_summary(results['summary'], results['goals']) + '\n')
        print(format_table(results))
    # Without backbone tasks no run records the machine: record it here, the load after below.
    standalone = not args.tasks and bool(args.whole_model or args.onnx
                                         or args.roi_align is not None)
    if standalone:
        from convnext_dense.extras.benchmark.runner import machine_info
        results.update(machine=dict(machine_info('cpu'), malloc=malloc), clock=args.clock)
    if args.whole_model:
        from convnext_dense.extras.benchmark.whole_model import run_whole_models
        rows = run_whole_models(args.whole_model, args.sizes, args.whole_model_modes,
                                args.repeats, args.warmup, args.clock, log)
        results['whole_model'] = rows
        print('\n' + format_whole_model_table(rows))
    if args.onnx:
        from convnext_dense.extras.benchmark.onnx_speed import format_rows, run_onnx_speed
        results['onnx'] = run_onnx_speed(args.onnx, args.sizes[0], args.repeats, args.warmup,
                                         args.clock, args.arch, log)
        print('\n' + format_rows(results['onnx']))
    if args.roi_align is not None:
        from convnext_dense.extras.benchmark import roi_align_speed
        results['roi_align'] = roi_align_speed.run_roi_align_speed(
            args.roi_align or list(ROI_ALIGN_CASES), args.repeats, args.warmup, args.clock, log)
        print('\n' + roi_align_speed.format_rows(results['roi_align']))
    if standalone:
        from convnext_dense.extras.benchmark.timing import load_average
        results['machine']['load_average_after'] = load_average()
        print(f"\nMachine: {format_machine(results)}")
    results['command'] = ' '.join(['python', 'tools/benchmark.py'] + list(
        sys.argv[1:] if argv is None else argv))
    write_json(results, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
