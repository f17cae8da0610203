# tagrelay service image. Rules are a volume: mount your own at /rules.
#   docker build -t tagrelay .
#   docker run -p 8080:8080 -v "$PWD/rules:/rules:ro" -e META_PIXEL_ID=... tagrelay
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TAGRELAY_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
COPY static ./static
COPY rules /rules
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /data --create-home tagrelay

# The static files are read from the source tree (see Settings.static_dir).
ENV TAGRELAY_STATIC_DIR=/app/static
USER tagrelay
VOLUME ["/rules", "/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
ENTRYPOINT ["tagrelay", "serve", "--host", "0.0.0.0", "--port", "8080", "--rules", "/rules"]
