"""Installation script for dltk_mm."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="dltk_mm",
    version="0.1.0",
    description=(
        "TensorFlow 2 / Keras 3 multi-modal (unpaired CT and MRI) multi-organ segmentation: "
        "a reproduction of Valindria et al., WACV 2018."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dltk_mm", "dltk_mm.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.10,<4",
        "nibabel>=5.0",
        "SimpleITK>=2.3",
        "numpy>=1.26",
        "pandas>=2.0",
        "absl-py>=2.0",
        "matplotlib>=3.8",
    ],
    extras_require={"test": ["pytest>=8", "ruff>=0.6"]},
    entry_points={
        "console_scripts": [
            "dltk-mm-phantoms=dltk_mm.cli.phantoms:run",
            "dltk-mm-preprocess=dltk_mm.cli.preprocess:run",
            "dltk-mm-evaluate=dltk_mm.cli.evaluate:run",
            "dltk-mm-train=dltk_mm.cli.train:run",
            "dltk-mm-predict=dltk_mm.cli.predict:run",
            "dltk-mm-export=dltk_mm.cli.export:run",
            "dltk-mm-benchmark=dltk_mm.cli.benchmark:run",
            "dltk-mm-manifest=dltk_mm.cli.manifest:run",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
