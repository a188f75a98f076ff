"""Pictures of a demo run: training curves from mmengine's scalars and a gallery of predictions."""
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def read_scalars(work_dir: PathLike) -> List[Dict]:
    """All records mmengine's LocalVisBackend wrote under ``work_dir/<stamp>/vis_data/``.

    Runs (a training and its resumptions) are read in timestamp order; each record is one dict
    with a ``step`` (the iteration).

    Raises:
        FileNotFoundError: ``work_dir`` holds no ``scalars.json``.
    """
    files = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    if not files:
        raise FileNotFoundError(f'no */vis_data/scalars.json under {work_dir}')
    records = []
    for path in files:
        with open(path, encoding='utf-8') as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def series(records: Sequence[Mapping], key: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of ``key`` over the records that have it, by step (last one wins)."""
    points = {int(r['step']): float(r[key]) for r in records if key in r and 'step' in r}
    steps = np.array(sorted(points), dtype=int)
    return steps, np.array([points[s] for s in steps], dtype=float)


def smooth(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Running mean over ``window`` points (shorter at the start), same length as ``values``."""
    if window < 1:
        raise ValueError(f'window must be >= 1, got {window}')
    cumsum = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumsum[1:] - cumsum[np.arange(1, len(values) + 1) - counts]) / counts


def _save(fig, out_file: PathLike) -> Path:
    """Lay out ``fig``, write it as a PNG (folders created) and close it."""
    from matplotlib import pyplot as plt  # imported by the caller already (with its backend)
    fig.tight_layout()
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file


def plot_curves(panels: Sequence[Mapping], out_file: PathLike, columns: int = 2) -> Path:
    """Draw one line chart per panel into a PNG.

    Args:
        panels: Each ``dict(title=..., records=[...], keys=[...], ylabel=..., smooth=1)``;
            ``keys`` missing from the records are skipped.
        out_file: PNG to write (its folder is created).
        columns: Panels per row.

    Returns:
        ``out_file`` as a Path.
    """
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for key in panel['keys']:
            steps, values = series(panel['records'], key)
            if len(steps) == 0:
                continue
            window = panel.get('smooth', 1)
            marker = 'o' if len(steps) <= 20 else None
            ax.plot(steps, smooth(values, window) if window > 1 else values, marker=marker,
                    label=key)
        ax.set_title(panel['title'])
        ax.set_xlabel('iteration')
        ax.set_ylabel(panel.get('ylabel', ''))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    return _save(fig, out_file)


def plot_gallery(columns: Sequence[Tuple[str, Sequence[PathLike]]], out_file: PathLike,
                 scale: float = 2.0, title: Optional[str] = None) -> Path:
    """Lay images out in a grid: one titled column per entry, one row per image index.

    Args:
        columns: ``(title, [image files])``; every column lists the same number of images.
        out_file: PNG to write (its folder is created).
        scale: Inches per 100 pixels of the largest image.
        title: Figure title.

    Returns:
        ``out_file`` as a Path.

    Raises:
        ValueError: no columns, or columns of different lengths.
    """
    import matplotlib
    matplotlib.use('Agg')
    import mmcv
    from matplotlib import pyplot as plt

    if not columns or len({len(files) for _, files in columns}) != 1 or not columns[0][1]:
        raise ValueError('plot_gallery needs columns with the same, non-zero number of images, '
                         f'got {[(t, len(f)) for t, f in columns]}')
    images = [[mmcv.imread(str(f), channel_order='rgb') for f in files] for _, files in columns]
    height = max(im.shape[0] for col in images for im in col)
    width = max(im.shape[1] for col in images for im in col)
    rows = len(columns[0][1])
    fig, axes = plt.subplots(rows, len(columns), squeeze=False, figsize=(
        len(columns) * width / 100 * scale, rows * height / 100 * scale + (0.4 if title else 0)))
    for c, ((col_title, _), col_images) in enumerate(zip(columns, images)):
        for r, image in enumerate(col_images):
            ax = axes[r][c]
            ax.imshow(image, interpolation='nearest')
            ax.set_axis_off()
            if r == 0:
                ax.set_title(col_title, fontsize=11)
    if title:
        fig.suptitle(title)
    return _save(fig, out_file)
