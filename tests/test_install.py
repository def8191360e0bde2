"""The installed package and the TensorFlow that loads it: what a built
fused-lif requires, and what it says when its op library was built for
another TensorFlow."""

import importlib.metadata
import os
import shutil

import pytest
import tensorflow as tf
from conftest import run_python
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from fused_lif import _build_info, _library, ops

TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu")


def minor(version):
    return ".".join(version.split(".")[:2])


def test_installed_package_requires_the_tensorflow_minor_it_was_built_for():
    requires = [Requirement(r) for r in importlib.metadata.requires("fused-lif")]
    on_tensorflow = [r for r in requires if r.name in TENSORFLOW_DISTRIBUTIONS and not r.marker]
    assert len(on_tensorflow) == 1, requires
    major, low = (int(x) for x in _build_info.TF_VERSION.split(".")[:2])
    assert on_tensorflow[0].specifier == SpecifierSet(f">={major}.{low},<{major}.{low + 1}"), (
        on_tensorflow[0], _build_info.TF_VERSION)


def test_load_error_names_both_tensorflow_versions(monkeypatch):
    other = "2.16.2" if minor(tf.__version__) != "2.16" else "2.21.0"
    monkeypatch.setattr(_build_info, "TF_VERSION", other)
    msg = _library._explain(_library.library_path(), OSError("undefined symbol: _ZN10tensorflow"))
    assert f"built for TensorFlow {other}, but TensorFlow {tf.__version__} is running" in msg, msg
    assert "undefined symbol" in msg, msg
    assert f"wheel built for TensorFlow {minor(tf.__version__)} " in msg, msg
    assert "pip install --no-build-isolation" in msg and "implementation='reference'" in msg, msg


def test_load_error_for_the_same_tensorflow_does_not_blame_the_version(monkeypatch):
    monkeypatch.setattr(_build_info, "TF_VERSION", tf.__version__)
    msg = _library._explain(_library.library_path(), OSError("some other failure"))
    assert "It was built for TensorFlow" not in msg, msg
    assert "some other failure" in msg and "Rebuild" in msg, msg


OTHER = os.environ.get("FUSED_LIF_TEST_OTHER_TF_PACKAGE")


@pytest.mark.skipif(not OTHER, reason="set FUSED_LIF_TEST_OTHER_TF_PACKAGE to the fused_lif "
                                      "folder of an install built for another TensorFlow (CI does)")
def test_package_built_for_another_tensorflow_is_refused_clearly(tmp_path):
    """A real fused-lif install built for another TensorFlow minor, imported
    under this one: the op library does not load, the message names both
    versions and the way out, and the layer falls back to the reference."""
    built = {}
    exec(open(os.path.join(OTHER, "_build_info.py")).read(), built)
    assert minor(built["TF_VERSION"]) != minor(tf.__version__), (built, tf.__version__)
    shutil.copytree(OTHER, tmp_path / "fused_lif", ignore=shutil.ignore_patterns("__pycache__"))
    out = run_python(f"""
        import warnings, numpy as np, tensorflow as tf
        import fused_lif
        assert fused_lif.__file__.startswith({str(tmp_path)!r}), fused_lif.__file__
        assert not fused_lif.is_available()
        try:
            fused_lif.lif_scan(np.ones((1, 2, 3), np.float32))
            raise SystemExit("the op library built for another TensorFlow loaded")
        except fused_lif.FusedOpUnavailableError as e:
            msg = str(e)
        print(msg)
        assert "built for TensorFlow {built["TF_VERSION"]}, but TensorFlow " + tf.__version__ \\
            + " is running" in msg, msg
        minor = ".".join(tf.__version__.split(".")[:2])
        assert "wheel built for TensorFlow " + minor in msg, msg
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = fused_lif.LIFLayer(4)(np.ones((2, 5, 3), np.float32))
        assert y.shape == (2, 5, 4)
        assert any("falls back" in str(w.message) for w in caught), [str(w.message) for w in caught]
        print("refused ok")
    """, env={"PYTHONPATH": str(tmp_path)})
    assert "refused ok" in out
