"""fused-lif's requirement on TensorFlow: a scikit-build-core dynamic-metadata
provider (``[[tool.dynamic-metadata]]`` in pyproject.toml).

A TensorFlow custom op loads only in the TensorFlow minor it was compiled
against. So every wheel, whether built by tools/build_wheel.sh or by a
from-source ``pip install``, requires exactly that minor
(``tensorflow>=2.21,<2.22``), under the name of the distribution that
provided it: a build against ``tensorflow-cpu`` requires ``tensorflow-cpu``
and does not pull the full ``tensorflow`` in beside it. The sdist, which
builds against any supported TensorFlow, keeps the supported range from
pyproject.toml and marks Requires-Dist as Dynamic (METADATA 2.2).

Why a provider and not a rewrite of the built wheel's METADATA in
tools/build_wheel.sh: the pin must hold for every build, from-source installs
included (a source build against tensorflow-cpu would otherwise require
``tensorflow``, and pip would install a second, possibly different,
TensorFlow over it), and scikit-build-core (>= 1.1) tells a provider whether it
builds the sdist or a wheel.

Settings (the ``[[tool.dynamic-metadata]]`` table):
  tensorflow    the supported range, e.g. ">=2.16,<2.22"
  dependencies  the other requirements, unchanged
"""

import sys
from importlib import metadata

# Distributions that install the `tensorflow` module, in order of preference
# when several are installed.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu")

_state = {"build": "metadata_wheel"}


def build_state(state):
    """scikit-build-core says what it builds: "sdist", "wheel", ..."""
    _state["build"] = state


def dynamic_wheel(settings):
    """Requires-Dist may differ between the sdist and a wheel built from it."""
    return {"dependencies": True}


def installed_tensorflow():
    """(distribution name, version) of the installed TensorFlow, or None."""
    for name in TENSORFLOW_DISTRIBUTIONS:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def minor_pin(name, version):
    """"tensorflow", "2.21.0" -> "tensorflow>=2.21,<2.22"."""
    parts = version.split(".")
    major, minor = int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()))
    return f"{name}>={major}.{minor},<{major}.{minor + 1}"


def in_range(version, supported):
    try:
        from packaging.specifiers import SpecifierSet  # scikit-build-core depends on it
    except ImportError:
        return True
    return SpecifierSet(supported).contains(version, prereleases=True)


def tensorflow_requirement(supported, build):
    """The requirement on TensorFlow for this build ("sdist" or a wheel)."""
    found = installed_tensorflow() if build != "sdist" else None
    if found is None:
        return f"tensorflow{supported}"
    name, version = found
    if not in_range(version, supported):
        print(f"fused-lif: warning: building against {name} {version}, outside the supported "
              f"and tested range tensorflow{supported}", file=sys.stderr)
    return minor_pin(name, version)


def dynamic_metadata(settings, project):
    unknown = set(settings) - {"tensorflow", "dependencies"}
    if unknown or "tensorflow" not in settings:
        raise RuntimeError("tf_requirement: settings are 'tensorflow' (the supported range) "
                           f"and 'dependencies'; got {sorted(settings)}")
    requirement = tensorflow_requirement(settings["tensorflow"], _state["build"])
    return {"dependencies": [requirement, *settings.get("dependencies", [])]}
