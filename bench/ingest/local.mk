# bench/ingest/local.mk
