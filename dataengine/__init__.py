"""The segmentation data engine: SAM's three annotation stages and the model-in-the-loop cycle.

The engine is plain Python: it never imports Airflow. `operators/` and `plugins/` adapt it to Airflow,
`dags/` wire the stages, and the `dataengine` command (`dataengine.cli`) drives it from a shell.
"""

__version__ = "0.1.0"
