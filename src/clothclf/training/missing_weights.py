"""Missing ImageNet weights, said in one sentence with the way out (no TensorFlow here).

``keras.applications`` downloads a backbone's ImageNet weights the first time it builds it; offline, and
with nothing in the Keras cache, that fails with a bare ``Exception: URL fetch failure on …`` deep in a
traceback. :func:`weights_failure` recognises that failure and :func:`missing_weights_text` says what
is missing and what to do: put the file in the Keras cache (``KERAS_HOME``), pick a backbone whose
weights are here, or train from scratch (``--weights none``).
"""

from __future__ import annotations

from clothclf.errors import ClothclfError
from clothclf.modeling.backbones import BACKBONES, keras_models_dir, weights_cached, weights_file_name

#: The start of the message ``keras.utils.get_file`` raises when a download fails.
KERAS_FETCH_FAILURE = "URL fetch failure"


class WeightsUnavailable(ClothclfError):
    """A pretrained backbone's ImageNet weights are neither on this machine nor downloadable."""


def backbones_with_weights(image_size: int) -> list[str]:
    """The pretrained backbones whose ImageNet weights at ``image_size`` are on this machine."""
    return [name for name, spec in BACKBONES.items() if spec.pretrained and weights_cached(name, image_size)]


def missing_weights_text(backbone: str, image_size: int, *, for_page: bool = False) -> str:
    """One sentence: which weights file is missing, where it would be looked for, and the ways out
    (spelled as the command line takes them, or as the Fine-tune page offers them)."""
    file = weights_file_name(backbone, image_size)
    where = f"{file} in {keras_models_dir()}" if file else "its weights package"
    here = backbones_with_weights(image_size)
    if for_page:
        other = f"choose a backbone whose weights are here ({', '.join(here)})" if here else None
        ways = [other, "train from scratch (much lower accuracy)"]
        setup = "or set KERAS_HOME on the server to a folder that holds the file"
    else:
        other = f"--backbone {here[0]}" if here else None
        ways = [other, "--weights none (from scratch, much lower accuracy)"]
        setup = "or set KERAS_HOME to a folder whose models/ holds the file"
    ways_text = ", ".join(w for w in ways if w)
    return (
        f"the ImageNet weights of {backbone} at {image_size} px are not on this computer ({where}) and "
        f"cannot be downloaded without internet access: use {ways_text}, {setup}."
    )


def weights_failure(exc: BaseException, backbone: str, image_size: int) -> WeightsUnavailable | None:
    """``exc`` as :class:`WeightsUnavailable` if it is Keras failing to download ``backbone``'s missing
    ImageNet weights; None for any other error."""
    spec = BACKBONES.get(backbone)
    if spec is None or not spec.pretrained or weights_cached(backbone, image_size):
        return None
    if not str(exc).startswith(KERAS_FETCH_FAILURE):
        return None
    return WeightsUnavailable(missing_weights_text(backbone, image_size))
