# threadswarm: one image for every process (web, worker, clock, migrate); compose.yaml runs them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 THREADSWARM_DATA_DIR=/data PORT=3000
WORKDIR /app

# Exactly the lock. Its torch line is the CPU build (torch==2.13.0+cpu), which only PyTorch's
# CPU index carries (PyPI's torch brings CUDA, gigabytes of it): that one package comes from
# there, without its dependencies, and everything else, torch's dependencies too, from PyPI as
# pinned. Nothing outside the lock is resolved.
COPY requirements.lock ./
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu \
        "$(grep '^torch==' requirements.lock)" \
    && pip install -r requirements.lock

# The project itself, without resolving anything (its build backend is pinned in the lock).
COPY pyproject.toml README.md ./
COPY bot bot
COPY swarm swarm
COPY memory memory
COPY schedules schedules
RUN pip install --no-deps --no-build-isolation . && rm -rf build *.egg-info

# Not root: the processes need nothing of root's, and /data (SQLite, FAISS files) is theirs.
RUN useradd --create-home --uid 10001 threadswarm && mkdir -p /data \
    && chown threadswarm:threadswarm /data
USER threadswarm
VOLUME /data
EXPOSE 3000
CMD ["threadswarm", "serve"]
