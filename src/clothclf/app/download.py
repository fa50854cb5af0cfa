"""The default dataset on demand, for the pages that show or train on it (no Streamlit here).

On a fresh deploy (Streamlit Community Cloud) the dataset is absent and there is no shell to run
``clothclf data download`` in: the pages offer a button that calls
:func:`clothclf.data.download.download_dataset` and draw its progress with :func:`download_progress`.
"""

from __future__ import annotations

from clothclf.app.models_list import dataset_root_for, recorded_dataset_root
from clothclf.config import MB, Paths
from clothclf.runs import RunInfo

#: Roughly how big the download is, said before it starts.
DATASET_SIZE_TEXT = "about 100 MB"


def dataset_downloadable(run: RunInfo | None, paths: Paths | None = None) -> bool:
    """Whether the photos a page needs would come from downloading the default dataset: ``run`` (None:
    no particular run) is on the default dataset and that is not on this computer. A run on its own
    photos that are gone is not helped by the default dataset, so it is never offered then."""
    return recorded_dataset_root(run) is None and dataset_root_for(run, paths) is None


def download_progress(done: int, total: int | None, seconds: float) -> tuple[float, str]:
    """The share done (0..1) and a line with the count and an estimate for a download that has taken
    ``seconds`` so far: ``Downloading the dataset… 12 of 98 MB · about 40 s left``."""
    if not total:
        return 0.0, f"Downloading the dataset… {done / MB:.0f} MB"
    fraction = min(done / total, 1.0)
    text = f"Downloading the dataset… {done / MB:.0f} of {total / MB:.0f} MB"
    if done >= total:
        return 1.0, f"{text} · extracting and checking the photos"
    if done > 0 and seconds >= 1.0:
        left = seconds / done * (total - done)
        text += f" · about {left_text(left)} left"
    return fraction, text


def left_text(seconds: float) -> str:
    """A rough time span: ``40 s``, ``3 min``."""
    return f"{max(round(seconds), 1)} s" if seconds < 90 else f"{round(seconds / 60)} min"
