# bench/local.mk: one folder per benchmark; `make bench-NAME` runs it and
# the run ends with one JSON line of figures and ratios.
include bench/ingest/local.mk
include bench/reservoir/local.mk
include bench/trainer/local.mk
include bench/monitoring/local.mk
include bench/online_offline/local.mk
include bench/gpu/local.mk
include bench/clients/local.mk
include bench/external/local.mk
include bench/scaling/local.mk
