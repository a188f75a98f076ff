"""Generate the demo "shapes" dataset (COCO and ADE20K layouts) that ``make demo`` trains on.

Usage:
    python tools/make_demo_data.py [OUT_DIR] [--seed 0] [--num-train 400] [--num-val 100] [--force]

Does nothing if OUT_DIR already holds the same dataset; otherwise writes it to a temporary folder
and renames it into place.
"""
import argparse
import time

from convnext_dense.extras.demo.shapes import DEFAULT_OUT_DIR, generate_shapes_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', nargs='?', default=DEFAULT_OUT_DIR,
                        help=f'output folder (default: {DEFAULT_OUT_DIR})')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    parser.add_argument('--num-train', type=int, default=400, help='training images (default: 400)')
    parser.add_argument('--num-val', type=int, default=100, help='validation images (default: 100)')
    parser.add_argument('--force', action='store_true', help='regenerate even if up to date')
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        meta, created = generate_shapes_dataset(
            args.out_dir, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
            force=args.force)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    state = f'generated in {time.perf_counter() - start:.1f} s' if created else 'already up to date'
    print(f'{args.out_dir}: {state} (seed {meta["seed"]}, classes {", ".join(meta["classes"])})')
    for split, stats in meta['stats'].items():
        per_image = stats['objects_per_image']
        print(f'  {split}: {stats["images"]} images, {stats["instances"]} objects '
              f'({per_image["min"]}-{per_image["max"]}, mean {per_image["mean"]} per image), '
              f'per class {stats["instances_per_class"]}')


if __name__ == '__main__':
    main()
