"""KITTI evaluation from the command line (OpenPCDet's evaluate.py flags)::

    python -m pcdet.datasets.kitti.kitti_object_eval_python.evaluate --label_path data/kitti/training/label_2 \
        --result_path output/.../final_result/data --label_split_file data/kitti/ImageSets/val.txt \
        --current_class 0,1,2

Result files are KITTI label lines with a 16th column (score), one ``%06d.txt`` per frame of the split.
"""
import argparse

from . import kitti_common as kitti
from .eval import get_official_eval_result


def parse_classes(text):
    """'0,1,2' or 'Car,Pedestrian' -> list of ints / names."""
    return [int(t) if t.strip().isdigit() else t.strip() for t in text.split(',') if t.strip()]


def evaluate(label_path, result_path, label_split_file, current_class=0, score_thresh=-1):
    """Evaluate a result folder against a label folder; returns (report, ret_dict)."""
    val_image_ids = kitti.read_imageset_file(label_split_file)
    dt_annos = kitti.get_label_annos(result_path, val_image_ids)
    if score_thresh > 0:
        dt_annos = kitti.filter_annos_low_score(dt_annos, score_thresh)
    gt_annos = kitti.get_label_annos(label_path, val_image_ids)
    return get_official_eval_result(gt_annos, dt_annos, current_class)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Official KITTI 3D object metric (CPU).')
    parser.add_argument('--label_path', required=True, help='folder of ground-truth label_2 files')
    parser.add_argument('--result_path', required=True, help='folder of result files (label lines + score)')
    parser.add_argument('--label_split_file', required=True, help='ImageSets file listing the frame ids')
    parser.add_argument('--current_class', default='0', help='class indices or names, comma separated')
    parser.add_argument('--score_thresh', type=float, default=-1, help='drop detections below this score')
    args = parser.parse_args(argv)
    result, _ = evaluate(args.label_path, args.result_path, args.label_split_file,
                         parse_classes(args.current_class), args.score_thresh)
    print(result, end='')


if __name__ == '__main__':
    main()
