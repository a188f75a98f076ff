"""Train a detector (mmdet config) or segmenter (mmseg config) with mmengine's Runner."""
import argparse

from mmengine.config import DictAction

from convnext_dense import runner_setup


def parse_args():
    parser = argparse.ArgumentParser(description='Train a ConvNeXt detector or segmenter')
    parser.add_argument('config', help='config file, or mmdet::/mmseg:: name')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='PATH',
                        help='resume from PATH, or from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (fp32 on CPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the real total batch size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    parser.add_argument('--launcher', choices=runner_setup.LAUNCHERS, default='none')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    runner_setup.set_local_rank_env(args.local_rank)
    cfg = runner_setup.load_config(args.config, args.cfg_options)
    runner_setup.set_work_dir(cfg, args.config, args.work_dir)
    runner_setup.set_amp(cfg, args.amp)
    runner_setup.set_auto_scale_lr(cfg, args.auto_scale_lr)
    runner_setup.set_resume(cfg, args.resume)
    runner_setup.set_launcher(cfg, args.launcher)
    runner_setup.run(cfg, 'train')


if __name__ == '__main__':
    main()
