"""The training runner behind ``spikingjelly-psn train``: recipes, data, models, loop, resume, DDP.

Entry point: :func:`spikingjelly_psn.train.cli.main`; the configuration schema lives in
:mod:`spikingjelly_psn.train.config`.
"""
