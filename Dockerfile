# GenOps image: the proxy (`genops serve`), the OTLP collector (`genops collector`) and the
# anomaly jobs (`genops jobs run`) all run from it; docker-compose.yml picks the command.
FROM python:3.12.8-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY proxy ./proxy
COPY storage ./storage
COPY collectors ./collectors
COPY api ./api
COPY runtime ./runtime
COPY dashboards ./dashboards
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12.8-slim-bookworm
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/genops genops
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER genops
WORKDIR /var/lib/genops
ENV GENOPS_HOST=0.0.0.0 \
    GENOPS_DATA_DIR=/var/lib/genops \
    GENOPS_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080 4318
ENTRYPOINT ["genops"]
CMD ["serve"]
