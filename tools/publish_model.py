"""Publish a trained checkpoint: keep meta and state_dict, name it OUT_YYYYMMDD-<sha256[:8]>.pth.

mmdet's and mmseg's publish_model.py, for torch >= 2.6: the training checkpoint is read safely,
numpy scalars in its meta become Python numbers, and the published file loads with a plain
torch.load(weights_only=True) (checked before it is written).

Example:
    python tools/publish_model.py work_dirs/mask_rcnn/epoch_36.pth mask-rcnn_convnext-b-in22k.pth
"""
import argparse
import sys

from convnext_dense.convert.publish import DEFAULT_SAVE_KEYS, publish_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('in_file', help='checkpoint written by training')
    parser.add_argument('out_file', help='name to publish under (date and hash are appended)')
    parser.add_argument('--save-keys', nargs='+', default=list(DEFAULT_SAVE_KEYS),
                        help='top-level keys to keep (default: meta state_dict)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        published = publish_checkpoint(args.in_file, args.out_file, args.save_keys)
    except (ValueError, OSError) as err:  # bad input; a file missing, in the way, unwritable
        print(f'error: {err}', file=sys.stderr)
        return 1
    if published.removed:
        print(f'removed: {", ".join(published.removed)}')
    print(f'kept: {", ".join(published.kept)}; {published.size_in / 2**20:.1f} MiB -> '
          f'{published.size_out / 2**20:.1f} MiB')
    print(f'sha256 {published.sha256}')
    print(f'wrote {published.path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
