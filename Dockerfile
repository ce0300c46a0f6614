# fedledger's image: the Python package (SDK, CLI `fedledger`, backend) and the npm tooling
# (anvil for the devnet service). The install steps are the Makefile's `venv` and `node`
# targets: torch pinned and installed first (the CPU build; an unpinned torch would pull a
# multi-GB CUDA build), then the package with the Postgres driver, then `npm ci`.
FROM node:20-bookworm-slim AS node

FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/app/node_modules/.bin:$PATH \
    FEDLEDGER_HOME=/data/fedledger

# Node.js and npm from the official image (same Debian release, same libc).
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx

WORKDIR /app

# Makefile `venv`, step 1: torch first, pinned, CPU build.
RUN pip install torch==${TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu

# Makefile `node`: the Foundry binaries (anvil, cast), Hardhat and solc, from the lock file.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# Makefile `venv`, step 2: the package itself, editable, with the Postgres driver.
COPY pyproject.toml README.md ./
COPY client client
COPY backend backend
RUN pip install -e '.[postgres]'

# Never run as root; the volumes mount under /data, owned by this user.
RUN useradd --create-home --uid 10001 fedledger \
 && mkdir -p /data/fedledger /data/anvil \
 && chown -R fedledger:fedledger /data
USER fedledger

EXPOSE 8000 8545
CMD ["fedledger", "--help"]
