-- A second database for items served by the PostgreSQL loaders (the first, POSTGRES_DB, is MLflow's).
CREATE DATABASE items;
