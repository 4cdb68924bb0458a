"""The smallest training run the train tests share: 48 digits in batches of 16, a narrow net."""

#: ``--set`` overrides for 3 batches of 16 samples per epoch, 16 test samples, a 2-layer net.
TINY = [
    "data.limit_train=48",
    "data.limit_test=16",
    "data.batch_size=16",
    "model.channels=8",
    "model.layers=2",
]
#: No progress bar, TensorBoard or plot: only what the tests read.
QUIET = ["train.progress=false", "train.tensorboard=false", "train.plot=false"]
