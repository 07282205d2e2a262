/*
 * trainer/predict.h - `surge predict`: evaluate a trained model file on
 * parameters, write .npy and PNG previews (docs/model-file.md).
 */
#ifndef SURGE_TRAINER_PREDICT_H
#define SURGE_TRAINER_PREDICT_H

/* surge_predict_main - `surge predict [options]`; argv[0] is "predict".
 * Returns the process exit status: 0 ok, 1 failure, 2 usage error. */
int surge_predict_main(int argc, char **argv);

#endif /* SURGE_TRAINER_PREDICT_H */
