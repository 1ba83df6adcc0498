"""MTCNN landmarks on the in-the-wild portraits: accuracy against the reference detections, and speed.

    python -m benchmarks.landmarks [--data ../shared/data/portraits/in-the-wild] [--repeats 3] [--threads N]
                                   [--out benchmarks/results]

Runs ``engine.portrait.mtcnn`` on every photo (*.jpg, *.png) of the folder and compares the largest face's
five landmarks (what EG3D's preprocessing keeps) with ``detections/NAME.txt``: the error of a photo is the
mean landmark distance divided by the reference inter-ocular distance (left to right eye).  Prints the
median and the maximum over photos, and the time per photo (detection only, image already decoded): the
median over photos of each photo's fastest of ``--repeats`` runs, after one warm-up run.  Results go to
OUT/landmarks.json with every photo's size, error, face count and time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks import write_results
from engine.core.machine import machine_info
from engine.portrait.mtcnn import MIN_SCORE, landmark_error, load_mtcnn

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "portraits" / "in-the-wild"


def measure(photo: Path, detector, repeats: int) -> dict:
    """One photo: its largest face's landmark error (fraction of the reference IOD) and the fastest time."""
    with Image.open(photo) as image:
        rgb = np.asarray(image.convert("RGB"))
    reference = np.loadtxt(photo.parent / "detections" / f"{photo.stem}.txt").reshape(5, 2)
    faces = detector.detect(rgb)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector.detect(rgb)
        times.append(time.perf_counter() - start)
    iod = float(np.linalg.norm(reference[1] - reference[0]))
    error = landmark_error(faces[0].landmarks, reference) if faces else None
    return {"photo": photo.name, "width": rgb.shape[1], "height": rgb.shape[0], "faces": len(faces),
            "score": faces[0].score if faces else None, "inter_ocular_px": iod, "error_iod": error,
            "seconds": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA), help="folder of photos with detections/NAME.txt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (1 gives steadier figures on a busy machine)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = sorted(p for p in Path(args.data).glob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not photos:
        raise SystemExit(f"no photos in {args.data}")
    detector = load_mtcnn()
    rows = []
    for photo in photos:
        row = measure(photo, detector, args.repeats)
        rows.append(row)
        error = "no face" if row["error_iod"] is None else f"{row['error_iod']:.4f} IOD"
        print(f"{row['photo']:>12} {row['width']}x{row['height']}: {row['faces']} face(s), {error}, "
              f"{1000 * row['seconds']:.0f} ms", flush=True)
    errors = [r["error_iod"] for r in rows if r["error_iod"] is not None]
    seconds = [r["seconds"] for r in rows]
    worst = max((r for r in rows if r["error_iod"] is not None), key=lambda r: r["error_iod"])
    results = {
        "machine": machine_info(), "threads": args.threads, "min_score": MIN_SCORE, "photos": len(rows),
        "faces_found": len(errors), "error_iod_median": statistics.median(errors), "error_iod_max": worst["error_iod"],
        "error_iod_max_photo": worst["photo"], "seconds_per_photo_median": statistics.median(seconds),
        "seconds_per_photo_max": max(seconds), "per_photo": rows, "command": "python -m benchmarks.landmarks"}
    print(f"faces found in {len(errors)} of {len(rows)} photos; landmark error / IOD: median "
          f"{results['error_iod_median']:.4f}, max {results['error_iod_max']:.4f} ({worst['photo']}); "
          f"time per photo: median {1000 * results['seconds_per_photo_median']:.0f} ms, "
          f"max {1000 * results['seconds_per_photo_max']:.0f} ms", flush=True)
    write_results(args.out, "landmarks", results)


if __name__ == "__main__":
    main()
