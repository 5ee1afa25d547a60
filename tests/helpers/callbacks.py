"""Keras callbacks that tests name by `_target_: helpers.callbacks.<Name>` (tests/ is on the path: pytest's
rootdir insertion in this process, PYTHONPATH=tests for a subprocess)."""

import keras


class FailOnDepth(keras.callbacks.Callback):
    """A user's Keras callback with a bug that shows only in networks of a given depth."""

    def __init__(self, depth: int):
        super().__init__()
        self.depth = depth

    def on_train_batch_end(self, batch, logs=None):
        convs = [l for l in self.model.layers if isinstance(l, keras.layers.Conv2D)]
        if len(convs) == self.depth:
            raise RuntimeError(f"user callback bug at depth {self.depth}")


class CtrlCSurfacingAsAnotherError(keras.callbacks.Callback):
    """Presses Ctrl-C (SIGINT to this process) at the third batch; the KeyboardInterrupt then
    surfaces as another exception, as it can when it lands while TensorFlow traces a function
    (seen: `SystemError: ... bad argument to internal function`)."""

    def on_train_batch_end(self, batch, logs=None):
        import os
        import signal

        if batch == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                raise SystemError("bad argument to internal function") from None


class SendSignal(keras.callbacks.Callback):
    """Sends `signal` (a name: SIGTERM, SIGHUP, ...) to this process at the third batch, as
    `timeout`, SLURM or a closed terminal would while a cell trains."""

    def __init__(self, signal: str):
        super().__init__()
        self.signal = signal

    def on_train_batch_end(self, batch, logs=None):
        import os
        import signal

        if batch == 2:
            os.kill(os.getpid(), getattr(signal, self.signal))
