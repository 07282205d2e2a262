# bench/reservoir/local.mk
