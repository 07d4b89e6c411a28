# The Airflow image that docker-compose.yaml runs: the official image with this project's pinned
# requirements and the invoice_delivery package installed, the DAGs, plugins and templates built in.
FROM apache/airflow:3.3.2-python3.11

# The official image expects pip to run as the airflow user (it installs into ~/.local).
USER airflow
WORKDIR /opt/airflow

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/requirements/
# Stop the build when requirements.txt pins another Airflow than the base image carries.
RUN grep -qx "apache-airflow==${AIRFLOW_VERSION}" /opt/airflow/requirements/requirements.txt \
    || { echo "requirements.txt does not pin apache-airflow==${AIRFLOW_VERSION}; change the FROM line or the pin" >&2; exit 1; }
RUN pip install --no-cache-dir -r /opt/airflow/requirements/requirements.txt -c /opt/airflow/requirements/constraints.txt

# Layout inside the image: /opt/airflow/{dags,plugins,include} are Airflow's default folders, and the
# package is installed in editable mode from plugins/, so it finds include/templates/ next to them.
COPY --chown=airflow:0 pyproject.toml /opt/airflow/pyproject.toml
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
RUN pip install --no-cache-dir --no-deps -e /opt/airflow
