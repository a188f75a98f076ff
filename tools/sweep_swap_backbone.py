"""Swap every stock mmdet / mmseg config with a ResNet-family backbone to a tiny ConvNeXt,
write and reload the delta, build it and train one step on CPU; report n / N and the failures.

    python tools/sweep_swap_backbone.py --out work_dirs/swap_sweep.json

Takes about an hour or more on a CPU; ``--match`` and ``--limit`` run a subset.
"""
import argparse
import json
import os.path as osp
import sys

from convnext_dense.atomic_files import write_bytes
from convnext_dense.extras.swap_survey.sweep import (earlier_results, merge_results,
                                                     resnet_configs, run_sweep, summarize)
from convnext_dense.runtime.cli_options import positive_int


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('--out', required=True, help='JSON file for the per-config results')
    parser.add_argument('--scope', nargs='+', default=['mmdet', 'mmseg'],
                        choices=['mmdet', 'mmseg'])
    parser.add_argument('--match', default='', help='only configs whose name contains this')
    parser.add_argument('--limit', type=positive_int, help='stop after this many configs')
    parser.add_argument('--time-limit', type=positive_int, default=300,
                        help='seconds per config')
    parser.add_argument('--resume', action='store_true',
                        help='keep the configs --out already records as trained; rerun the rest')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if osp.isdir(args.out):
        print(f'error: --out {args.out} is a directory; give a JSON file name', file=sys.stderr)
        return 2
    try:
        earlier = earlier_results(args.out) if args.resume else dict(results=[], not_loaded=[])
    except ValueError as error:
        print(f'error: --resume: {error}', file=sys.stderr)
        return 2
    entries, not_loaded = [], []
    for entry in resnet_configs(args.scope):
        if args.match not in entry['config']:
            continue
        (not_loaded if 'load_error' in entry else entries).append(entry)
    if args.limit:
        entries = entries[:args.limit]
    done = {r['config']: r for r in earlier['results'] if r['status'] == 'trained'}
    kept = [done[e['config']] for e in entries if e['config'] in done]
    entries = [e for e in entries if e['config'] not in done]
    print(f'{len(entries) + len(kept)} configs with a ResNet-family backbone ({len(kept)} kept '
          f'from {args.out}); {len(not_loaded)} configs could not be loaded here and are not '
          'counted', flush=True)

    def in_file(results):
        # With --resume, results of configs outside this run's --match / --limit stay in --out
        # (and so do the kept ones).
        return merge_results(earlier['results'], results)

    def progress(result, results):
        print(f'[{len(kept) + len(results)}/{len(entries) + len(kept)}] {result["status"]:13s} '
              f'{result["seconds"]:6.1f}s {result["config"]}  {result["reason"][:160]}', flush=True)
        everything = in_file(results)
        loaded = {r['config'] for r in everything}
        failed = [e for e in merge_results(earlier['not_loaded'], not_loaded)
                  if e['config'] not in loaded]
        text = json.dumps(dict(summary=summarize(everything), not_loaded=failed,
                               results=everything), indent=1)
        write_bytes(args.out, text.encode('utf-8'))

    results = in_file(run_sweep(entries, time_limit=args.time_limit, progress=progress))
    summary = summarize(results)
    print(f'\n{summary["trained"]} / {summary["N"]} swapped, built and trained one step')
    print(json.dumps({k: summary[k] for k in ('by_status', 'by_backbone', 'reasons')}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
