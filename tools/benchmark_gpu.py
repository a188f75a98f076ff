"""GPU benchmark of the backbone: ours beside Hugging Face's ConvNextBackbone and timm's ConvNeXt.

Inference throughput and a training step (forward + backward) at 224x224 (batch 32) and
800x1216 (batch 2), in fp32, TF32 and bf16 autocast, channels-last, with peak GPU memory.
A few minutes of GPU time for ConvNeXt-B.

It needs torch, transformers (and timm to include it) and mmengine (pure Python; carry its wheel
and those of addict, yapf, termcolor and rich), but none of mmcv, mmdet or mmseg: importing
``convnext_dense`` only registers the backbone, which needs none of them.

    python tools/benchmark_gpu.py --json "$OUT/gpu_benchmark.json"
    python tools/benchmark_gpu.py --tiny   # seconds, on CPU when there is no GPU
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # the GPU machines run it from a checkout, without installing it
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='base')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--tiny', action='store_true',
                        help='tiny backbone and images, one repeat: checks that the script runs')
    parser.add_argument('--json', help='write all results here')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from convnext_dense.extras.benchmark.memory import measure_cuda_step_memory
    from convnext_dense.extras.benchmark.report import format_machine, format_summary, format_table
    from convnext_dense.extras.benchmark.report import write_json
    from convnext_dense.extras.benchmark.runner import BenchmarkConfig, run_benchmark, summarize

    cuda = torch.cuda.is_available()
    if args.tiny:
        arch, runs, repeats, warmup = dict(depths=(1, 1, 2, 1), channels=(16, 32, 64, 128)), \
            (((64, 96), 2),), 1, 0
        shapes = ((256, 256, 256),)
    else:
        arch, runs, repeats, warmup = args.arch, (((224, 224), 32), ((800, 1216), 2)), \
            args.repeats, args.warmup
        shapes = ((8192, 8192, 8192),) if cuda else None

    def log(line):
        print(f'... {line}', file=sys.stderr, flush=True)

    merged = {}
    for size, batch in runs:
        config = BenchmarkConfig(
            arch=arch, sizes=(size,), tasks=('infer', 'train'), precisions=('fp32', 'tf32', 'bf16'),
            variants=('channels_last',), peers=('huggingface', 'timm'), repeats=repeats,
            warmup=warmup, batch=batch, memory=cuda, device='cuda' if cuda else 'cpu',
            matmul_shapes=shapes)
        results = run_benchmark(config, log, memory_probe=measure_cuda_step_memory)
        for row in results['rows']:
            row['images_per_s'] = batch / row['median_s']
        if not merged:
            merged = results
        else:
            merged['rows'].extend(results['rows'])
            merged['macs'].update(results['macs'])
    merged['summary'] = summarize(merged)
    merged['command'] = ' '.join(['python', 'tools/benchmark_gpu.py'] + list(
        sys.argv[1:] if argv is None else argv))
    print(f'Machine: {format_machine(merged)}\n')
    print(format_summary(merged['summary'], []) + '\n')
    print(format_table(merged))
    print('\n| case | mode | images/s |\n|---|---|---|')
    for row in merged['rows']:
        print(f"| {row['group']} (batch {row['case']['batch']}) | {row['name']} | "
              f"{row['images_per_s']:.1f} |")
    write_json(merged, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
