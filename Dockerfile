# dltk_mm: the paper's benchmark (Valindria et al., WACV 2018) on a GPU.
#
#   docker build -t dltk_mm .
#   docker run --rm --gpus all -v /path/to/data:/data:ro -v /path/to/results:/results dltk_mm \
#       --preset=paper --label_preset=amos
#
# /data must hold manifest.csv (subject_id, modality, image, label; paths relative to it). The
# base image pins TensorFlow to the version setup.py requires (tensorflow==2.21.*).
ARG TENSORFLOW_VERSION=2.21.0
FROM tensorflow/tensorflow:${TENSORFLOW_VERSION}-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLBACKEND=Agg

WORKDIR /opt/dltk_mm
COPY setup.py README.md ./
COPY dltk_mm ./dltk_mm
# The paper's flagfiles, for dltk-mm-train --flagfile=/opt/dltk_mm/experiments/paper/common.cfg
# (the benchmark does not read them: its paper preset is TrainConfig's defaults).
COPY experiments/paper/*.cfg ./experiments/paper/
# TensorFlow comes from the base image; pip installs the other requirements of setup.py. The
# check imports the benchmark's command line from the installed package, not from this folder.
RUN pip install --no-cache-dir . \
    && cd / && python -c "from dltk_mm.cli.benchmark import run" && which dltk-mm-benchmark

VOLUME ["/data", "/results"]
WORKDIR /results
ENTRYPOINT ["dltk-mm-benchmark", "--manifest=/data/manifest.csv", "--results_dir=/results"]
CMD ["--preset=paper"]
