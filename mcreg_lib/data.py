"""Real data as completion problems.

* :func:`load_movielens`: MovieLens-100K from a ``u.data`` file the reader provides (no download), split into
  observed and held-out ratings by a random fraction or a number of observed ratings. ``u.data`` holds one rating
  per line: ``user_id<TAB>item_id<TAB>rating<TAB>timestamp`` with 1-based ids (943 users, 1682
  items, 100,000 ratings in the original).
* :func:`image_problem`: inpainting of a grayscale image as completion (e.g. scikit-image's sample images).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _validate as v
from .problems import Problem, problem_from_observations


def load_movielens(path: str | os.PathLike[str], test_fraction: float | None = None, seed: int = 0, *,
                   n_train: int | None = None) -> Problem:
    """A completion problem of users x items from a MovieLens ``u.data`` file: a seeded random part of the ratings
    observed, the rest held out as test entries (``run.summary['test_mse']``). Ids are mapped to rows/columns in
    sorted order.

    Give one of:

    * ``test_fraction``: hold out that fraction of the ratings (default 0.2 when ``n_train`` is not given: an 80/20
      split, as in Zhao 2022);
    * ``n_train``: observe exactly that many randomly chosen ratings and hold out all the others (Arora et al. 2019
      train on 10,000 random entries of MovieLens-100K and test on the other 90,000).
    """
    path = Path(path)
    if not path.is_file():
        v.fail("path", str(path), "an existing MovieLens u.data file (tab-separated user, item, rating, timestamp)")
    if n_train is not None and test_fraction is not None:
        raise ValueError(f"test_fraction={test_fraction!r} and n_train={n_train!r} are not allowed together: give "
                         "test_fraction (a random fraction held out) or n_train (that many random ratings observed)")
    if n_train is None:
        test_fraction = 0.2 if test_fraction is None else test_fraction
        test_fraction = v.real("test_fraction", test_fraction, 0.0, 1.0, strict_minimum=True)
        if test_fraction >= 1.0:
            v.fail("test_fraction", test_fraction, "a number strictly between 0 and 1")
    else:
        n_train = v.integer("n_train", n_train, 1)
    seed = v.integer("seed", seed, 0)
    try:
        raw = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"path={str(path)!r} is not a MovieLens u.data file: {exc}") from None
    if raw.shape[1] < 3:
        v.fail("path", str(path), "a file with at least 3 tab-separated columns (user, item, rating)")
    users, user_idx = np.unique(raw[:, 0].astype(np.int64), return_inverse=True)
    items, item_idx = np.unique(raw[:, 1].astype(np.int64), return_inverse=True)
    ratings = raw[:, 2]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ratings), generator=g).numpy()
    if n_train is not None:
        if n_train >= len(ratings):
            v.fail("n_train", n_train, f"fewer than the file's {len(ratings)} ratings (the rest are the test set)")
        train, test = order[:n_train], order[n_train:]
    else:
        n_test = int(round(test_fraction * len(ratings)))
        test, train = order[:n_test], order[n_test:]
    info = {"source": "movielens", "path": str(path), "n_users": len(users), "n_items": len(items),
            "n_ratings": len(ratings), "split_seed": seed,
            **({"n_train": n_train} if n_train is not None else {"test_fraction": test_fraction})}
    return problem_from_observations(
        user_idx[train], item_idx[train], ratings[train], (len(users), len(items)),
        test_rows=user_idx[test], test_cols=item_idx[test], test_values=ratings[test], info=info)


def image_problem(image: Any, size: int = 64, fraction: float = 0.5, seed: int = 0, *,
                  name: str = "image") -> Problem:
    """Inpainting as completion: a grayscale image resized to ``size x size`` (anti-aliased), scaled to RMS pixel 1
    (the book's convention for targets), with a seeded uniform ``fraction`` of its pixels observed.

    image: a 2-D array (e.g. ``skimage.data.camera()``). The full scaled image is the problem's target, so
    ``error_unobserved`` is the relative error on the missing pixels.
    """
    from skimage.transform import resize

    arr = np.asarray(image)
    if arr.ndim != 2:
        v.fail("image", f"array of shape {arr.shape}", "a 2-D grayscale image")
    if not np.all(np.isfinite(arr.astype(np.float64))):
        v.fail("image", "array with NaN or infinite values", "finite pixel values")
    size = v.integer("size", size, 2)
    fraction = v.real("fraction", fraction, 0.0, 1.0, strict_minimum=True)
    seed = v.integer("seed", seed, 0)
    small = resize(arr.astype(np.float64), (size, size), anti_aliasing=True)
    rms = math.sqrt(float(np.mean(small**2)))
    if rms == 0.0:
        v.fail("image", "an all-zero image", "an image with some non-zero pixel")
    target = small / rms
    n_obs = max(1, int(round(fraction * size * size)))
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(size * size, generator=g)[:n_obs].sort().values.numpy()
    rows, cols = flat // size, flat % size
    info = {"maker": "image_problem", "image": name, "size": size, "fraction": fraction, "seed": seed,
            "n_observed": n_obs}
    return problem_from_observations(rows, cols, target[rows, cols], (size, size), target=target, info=info)
