"""meltrca: Spark batch jobs for anomaly detection and root-cause analysis on MELT telemetry."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
# Shipped inside the wheel as meltrca/conf so that spark-submit'ed jobs find their defaults.
PACKAGED_CONF = ["default.yaml", "knowledge_base.yaml", "log4j2.properties", "log4j2-verbose.properties"]
PACKAGED_CONF_DIRS = ["schemas", "sources"]


class BuildWithConf(build_py):
    """Copy conf/ defaults into the built package (the checkout keeps one copy, in conf/)."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "meltrca" / "conf"
        target.mkdir(parents=True, exist_ok=True)
        for name in PACKAGED_CONF:
            src = HERE / "conf" / name
            if src.is_file():
                shutil.copy2(src, target / name)
        for name in PACKAGED_CONF_DIRS:
            src = HERE / "conf" / name
            if src.is_dir():
                shutil.copytree(src, target / name, dirs_exist_ok=True)


# Spark 4.0 is the newest minor that both Delta (delta-spark 4.0.x) and GraphFrames' spark4
# build target; see README "Versions".
RUNTIME = [
    "pyspark==4.0.1",
    "delta-spark==4.0.1",
    "graphframes-py==0.11.0",
    "pyarrow==21.0.0",
    "pandas>=2.2,<3",
    "numpy>=1.26,<2.3",
    "scikit-learn==1.7.2",
    "scipy==1.17.1",
    "skops==0.16.0",
    "tensorflow-cpu==2.20.0",
    "keras>=3.10,<4",
    "pyyaml==6.0.3",
    "jsonschema==4.26.0",
    "matplotlib>=3.9,<4",
]

DEV = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "chispa==0.12.0",
    "ruff==0.17.6",
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel>=6.29",
    "venv-pack==0.2.0",
    # drives Debian's /usr/bin/chromium (make browser) in the report test; no browser download
    "playwright==1.65.2",
]

setup(
    name="meltrca",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    package_dir={"": "lib", "meltrca_jobs": "jobs"},
    packages=find_packages("lib") + ["meltrca_jobs"],
    install_requires=RUNTIME,
    extras_require={"dev": DEV},
    entry_points={"console_scripts": ["meltrca = meltrca.cli:main"]},
    cmdclass={"build_py": BuildWithConf},
    include_package_data=False,
    zip_safe=False,
)
