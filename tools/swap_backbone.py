"""Write a config that swaps the backbone of an mmdet / mmseg config for ConvNeXt.

    python tools/swap_backbone.py mmdet::retinanet/retinanet_r50_fpn_1x_coco.py \
        --arch base --out configs/swapped/retinanet_convnext-b_fpn_1x_coco.py

The output inherits from SRC (``_base_``) and states only what changes; its header comments say
which stages ConvNeXt outputs and which fields were rewritten.
"""
import argparse
import sys

from convnext_dense.model.archs import ARCH_SETTINGS
from convnext_dense.swap import SwapRefused, plan_swap
from convnext_dense.swap.plan import check_out_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='config path, or mmdet::<path> / mmseg::<path>')
    parser.add_argument('--arch', default='base', choices=sorted(ARCH_SETTINGS))
    parser.add_argument('--pretrained', default='22k',
                        help="'22k' (default): the official ImageNet-22k weights of --arch; a "
                             "checkpoint path, URL or hub id; or 'none' (keywords in any case)")
    parser.add_argument('--no-recipe', action='store_true',
                        help='keep the optimizer and schedule of SRC (default: ConvNeXt AdamW '
                             'with layer-wise / stage-wise lr decay)')
    parser.add_argument('--out', required=True, help='config file to write')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_out_file(None if '::' in args.src else args.src, args.out)
        plan = plan_swap(args.src, arch=args.arch, pretrained=args.pretrained,
                         recipe=not args.no_recipe)
    except SwapRefused as error:
        print(f'refused: {error}', file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:  # --out is SRC or in its _base_ chain,
        # or not .py; --pretrained is no keyword nor checkpoint; SRC does not exist
        print(f'error: {error}', file=sys.stderr)
        return 2
    try:
        plan.dump(args.out)
    except OSError as error:  # --out a folder, or in one that does not exist or is read-only
        print(f'error: cannot write {args.out}: {error}', file=sys.stderr)
        return 2
    print('\n'.join(plan.notes))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
