"""mmengine's Runner with strict whole-model loading of ``load_from`` (used by tools/train.py, test.py).

mmengine loads ``load_from`` non-strictly: whatever does not fit stays at its init with a warning.
This Runner loads it with :func:`convnext_dense.weights.model_loader.load_model_checkpoint`:
evaluation (test / val) needs every tensor of the model from the checkpoint; training from
``load_from`` (fine-tuning) needs the whole backbone and lists the neck / head tensors that keep
their init. The checkpoint may be a file, URL, Hugging Face directory or hub id, in any layout
that module knows. ``--resume`` is mmengine's own path, after a check that the checkpoint is of
this very model. Testing never builds the training loop, so it never needs the training data.
A config's ``ChannelsLastHook`` converts the model before DDP wraps it.
"""
import logging

from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import BaseLoop, Runner

from ..weights.model_loader import load_model_checkpoint
from .channels_last import ChannelsLastHook, convert_to_channels_last
from .resumed_settings import describe, replaced_settings, settings_of


class StrictLoadRunner(Runner):
    """A Runner whose ``load_from`` is loaded strictly, by the rule of the current mode."""

    _load_purpose = 'evaluate'

    def train(self):
        """Train; ``load_from`` is a fine-tuning start (the backbone must fit)."""
        self._load_purpose = 'finetune'
        return super().train()

    def val(self):
        """Validate; ``load_from`` must fill the whole model."""
        self._load_purpose = 'evaluate'
        return super().val()

    def test(self):
        """Test; ``load_from`` must fill the whole model."""
        self._load_purpose = 'evaluate'
        return super().test()

    @property
    def iter(self) -> int:
        """The training iteration: 0 until training starts, as in mmengine's Runner.

        mmengine builds the training loop, and with it the training dataset, to answer; mmseg's
        visualization hook asks at every image ``tools/test.py --show-dir`` draws, which then
        failed where only the test data is present.
        """
        return self._train_loop.iter if isinstance(self._train_loop, BaseLoop) else 0

    @property
    def epoch(self) -> int:
        """The training epoch: 0 until training starts (see :attr:`iter`)."""
        return self._train_loop.epoch if isinstance(self._train_loop, BaseLoop) else 0

    def load_or_resume(self) -> None:
        """Resume as mmengine does; load ``load_from`` strictly."""
        if self._has_loaded or self._resume or self._load_from is None:
            return super().load_or_resume()
        checkpoint = load_model_checkpoint(self._bare_model(), self._load_from, self._load_purpose)
        self.call_hook('after_load_checkpoint',
                       checkpoint={'state_dict': checkpoint.state_dict, 'meta': checkpoint.meta})
        self._has_loaded = True

    def resume(self, filename: str, *args, **kwargs) -> None:
        """Resume as mmengine does, once the checkpoint is known to be of this very model.

        mmengine loads it non-strictly: another model's checkpoint (or this config with another
        class count) would fail later, deep in the optimizer or its first step. The settings of
        the schedulers and optimizer that the checkpoint's replace are logged as a warning
        (:mod:`.resumed_settings`).

        Raises:
            CheckpointError: the checkpoint does not fit the model (the keys are listed).
        """
        load_model_checkpoint(self._bare_model(), filename, 'resume')
        configured = settings_of(self)
        super().resume(filename, *args, **kwargs)
        replaced = replaced_settings(configured, settings_of(self))
        if replaced:
            print_log(describe(replaced, filename), logger='current', level=logging.WARNING)

    def wrap_model(self, model_wrapper_cfg, model):
        """Wrap as mmengine does, the model converted first where a ``ChannelsLastHook`` is
        configured.

        DDP lays out its gradient buckets from the parameters' strides when it wraps the model;
        converted afterwards (the hook's ``before_run``), every rank warned "Grad strides do not
        match bucket view strides" and copied each convolution's gradient into its bucket (at
        every step with ``find_unused_parameters=True``, which keeps the first layout).
        """
        if self.distributed and _wants_channels_last(self.cfg.get('custom_hooks')):
            convert_to_channels_last(model)
        return super().wrap_model(model_wrapper_cfg, model)

    def _bare_model(self):
        model = self.model
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):  # DDP, --tta
            model = model.module
        return model


def _wants_channels_last(hooks) -> bool:
    """Whether the ``custom_hooks`` config holds a :class:`ChannelsLastHook`."""
    names = ('convnext_dense.ChannelsLastHook', 'ChannelsLastHook', ChannelsLastHook)
    return any(isinstance(hook, dict) and hook.get('type') in names for hook in hooks or ())
