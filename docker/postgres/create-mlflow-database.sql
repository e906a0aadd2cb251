-- Runs once, when the postgres volume is first initialised: Optuna keeps the database named by
-- POSTGRES_DB ("optuna"), MLflow gets its own, since both libraries keep an alembic_version table.
CREATE DATABASE mlflow;
