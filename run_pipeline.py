"""Run the stages of one dataset and label setting in sequence (see training/pipeline.py).

    python run_pipeline.py --dataset synthetic --data_dir demo_out/preprocessed --out_dir demo_out/runs \
        --preset demo --methods baseline,plc
"""
from absl import app

from common.cli import run_main
from training import pipeline

if __name__ == "__main__":
    pipeline.define_flags()
    app.run(run_main(pipeline.main))
