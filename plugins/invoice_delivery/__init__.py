"""Continuous invoice delivery over each customer's preferred channel, run by Apache Airflow."""

__version__ = "0.1.0"
