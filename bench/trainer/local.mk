# bench/trainer/local.mk
