"""Convert a ConvNeXt checkpoint: to backbone weights, to Hugging Face (a ConvNextBackbone or a
UperNet), or to mmseg.

SRC may be a file, an http(s) URL, a Hugging Face model directory or a hub id; the layout
(official, Hugging Face, timm, mmpretrain, full mmdet / mmseg checkpoint, Hugging Face
UperNetForSemanticSegmentation) is detected from the keys.

Example:
    python tools/convert_checkpoint.py facebook/convnext-base-224-22k convnext_base_22k.safetensors
    python tools/convert_checkpoint.py convnext_base_22k_224.pth convnext_base_22k.pth --format pth
    python tools/convert_checkpoint.py work_dirs/mask_rcnn/epoch_36.pth hf_convnext --to hf-backbone
    python tools/convert_checkpoint.py work_dirs/upernet/iter_160000.pth hf_upernet --to hf-upernet
    python tools/convert_checkpoint.py openmmlab/upernet-convnext-tiny upernet_t.pth --to mmseg
"""
import argparse
import sys
from pathlib import Path

from convnext_dense.convert import convert_file, convert_to_hf_backbone
from convnext_dense.weights import format_report
from convnext_dense.convert.backbone_file import FORMATS, check_not_source
from convnext_dense.weights.hf_upernet import (DEFAULT_POOL_SCALES, classes_from_meta,
                                               mapping_lines, save_hf_upernet,
                                               save_mmseg_checkpoint, saved_pool_scales)
from convnext_dense.weights.model_loader import read_model_checkpoint

TARGETS = ('backbone', 'hf-backbone', 'hf-upernet', 'mmseg')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('src', help='checkpoint file, URL, Hugging Face directory or hub id')
    parser.add_argument('dst', help='output file (a directory for --to hf-backbone / hf-upernet)')
    parser.add_argument('--to', choices=TARGETS, default='backbone',
                        help='backbone weights alone (default); a Hugging Face ConvNextBackbone '
                             'directory (the feature maps of a dense backbone); a Hugging Face '
                             'UperNetForSemanticSegmentation directory; an mmseg checkpoint')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='backbone output format (default: pth for .pth/.pt/.bin, else '
                             'safetensors)')
    parser.add_argument('--prefix', default=None,
                        help="backbone, hf-backbone: take only keys under this prefix, e.g. "
                             "'backbone.' (default: detect)")
    parser.add_argument('--pool-scales', type=int, nargs='+', default=None,
                        help='hf-upernet: the decode head\'s pyramid pooling scales (default: '
                             'those the checkpoint records, else 1 2 3 6)')
    parser.add_argument('--verbose', action='store_true', help='print every key mapped')
    return parser.parse_args(argv)


def _whole_model(args) -> None:
    check_not_source(args.src, args.dst, folder=args.to == 'hf-upernet')
    if args.to == 'mmseg' and args.format not in (None, 'pth'):
        raise ValueError(f'--format {args.format}: an mmseg checkpoint is a torch.save file (pth)')
    checkpoint = read_model_checkpoint(args.src)
    classes = classes_from_meta(checkpoint.meta)
    print(f'Read {checkpoint.where}, layout: {checkpoint.layout}; '
          f'{len(checkpoint.state_dict)} tensors, classes: '
          f'{", ".join(classes) if classes else "none in the checkpoint (LABEL_i)"}')
    saved = saved_pool_scales(checkpoint.meta)
    if args.pool_scales and saved and tuple(args.pool_scales) != saved:
        raise ValueError(f'--pool-scales {tuple(args.pool_scales)}, but {checkpoint.where} was '
                         f'trained with pool_scales {saved}')
    pool_scales = tuple(args.pool_scales or saved or DEFAULT_POOL_SCALES)
    origin = 'given' if args.pool_scales else "the checkpoint's" if saved else 'the default'
    print(f'decode-head pool scales {pool_scales} ({origin})')
    if args.to == 'hf-upernet':
        dst, mapped = save_hf_upernet(checkpoint.state_dict, args.dst, classes, pool_scales)
        renamed = {k: v for k, v in mapped.items() if k != v}
        print(f'mapped {len(mapped)} tensors to Hugging Face names ({len(renamed)} renamed):')
        print('\n'.join(mapping_lines(renamed, 0 if args.verbose else 12)))
        print(f'wrote {Path(dst) / "config.json"} and {Path(dst) / "model.safetensors"} '
              '(UperNetForSemanticSegmentation.from_pretrained loads it)')
    else:
        renamed = checkpoint.renamed
        print(f'renamed {len(renamed)} keys to mmseg / convnext_dense names:')
        print('\n'.join(mapping_lines(renamed, 0 if args.verbose else 12)))
        dst = save_mmseg_checkpoint(checkpoint.state_dict, args.dst, classes, checkpoint.where,
                                    pool_scales)
        print(f'wrote {len(checkpoint.state_dict)} tensors to {dst}')


def _hf_backbone(args) -> None:
    conversion, where, mapped = convert_to_hf_backbone(args.src, args.dst, args.prefix)
    print(format_report(conversion, where))
    renamed = {k: v for k, v in mapped.items() if k != v}
    print(f'mapped {len(mapped)} tensors to Hugging Face names ({len(renamed)} renamed):')
    print('\n'.join(mapping_lines(renamed, 0 if args.verbose else 12)))
    dst = Path(args.dst)
    print(f'wrote {dst / "config.json"} and {dst / "model.safetensors"} '
          '(transformers\' ConvNextBackbone.from_pretrained loads it)')


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.to == 'hf-backbone':
            _hf_backbone(args)
            return 0
        if args.to != 'backbone':
            _whole_model(args)
            return 0
        conversion, where = convert_file(args.src, args.dst, args.format, args.prefix)
    # Bad input; a file missing, in the way, unwritable; transformers not installed.
    except (ValueError, OSError, ModuleNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(format_report(conversion, where))
    print(f'wrote {len(conversion.state_dict)} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
