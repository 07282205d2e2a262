# bench/monitoring/local.mk
