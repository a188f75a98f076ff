"""Convert a ConvNeXt checkpoint of any layout to the convnext_dense backbone layout.

SRC may be a file, an http(s) URL, a Hugging Face model directory or a hub id; the layout
(official, Hugging Face, timm, mmpretrain, full mmdet / mmseg checkpoint) is detected from the keys.

Example:
    python tools/convert_checkpoint.py facebook/convnext-base-224-22k convnext_base_22k.safetensors
    python tools/convert_checkpoint.py convnext_base_22k_224.pth convnext_base_22k.pth --format pth
"""
import argparse
import sys

from convnext_dense.weights import convert_file, format_report
from convnext_dense.weights.export import FORMATS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint file, URL, Hugging Face directory or hub id')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='output format (default: pth for .pth/.pt/.bin, else safetensors)')
    parser.add_argument('--prefix', default=None,
                        help="take only keys under this prefix, e.g. 'backbone.' (default: detect)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        conversion, where = convert_file(args.src, args.dst, args.format, args.prefix)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(format_report(conversion, where))
    print(f'wrote {len(conversion.state_dict)} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
