# The consumer service image: no torch, no transformers (the `train` extra is not installed).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY producer ./producer
COPY consumer ./consumer
COPY predstream ./predstream
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --no-create-home predstream
ENV PREDSTREAM_MIGRATIONS_DIR=/app/migrations
USER predstream
ENTRYPOINT ["predstream"]
CMD ["consume"]
