-- The job store as siasync left it at schema version 3 (before Alembic): what SQLAlchemy's create_all
-- made, dumped from a store created by that version.
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);
CREATE TABLE jobs (
	id VARCHAR(32) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	run_id VARCHAR(255), 
	phase VARCHAR(16) NOT NULL, 
	creation_time DATETIME NOT NULL, 
	start_time DATETIME, 
	end_time DATETIME, 
	execution_duration INTEGER NOT NULL, 
	destruction DATETIME NOT NULL, 
	quote DATETIME, 
	start_after DATETIME, 
	error_type VARCHAR(16), 
	error_message TEXT, 
	parameters JSON NOT NULL, 
	spec JSON NOT NULL, 
	info JSON NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_jobs_owner_created ON jobs (owner, creation_time);
CREATE INDEX ix_jobs_destruction ON jobs (destruction);
CREATE INDEX ix_jobs_phase ON jobs (phase);
CREATE TABLE results (
	job_id VARCHAR(32) NOT NULL, 
	seq INTEGER NOT NULL, 
	result_id VARCHAR(255) NOT NULL, 
	path VARCHAR(1024) NOT NULL, 
	size BIGINT NOT NULL, 
	mime_type VARCHAR(64) NOT NULL, 
	meta JSON NOT NULL, 
	PRIMARY KEY (job_id, seq), 
	CONSTRAINT uq_results_job_result UNIQUE (job_id, result_id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
CREATE TABLE uploads (
	job_id VARCHAR(32) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	mime_type VARCHAR(64) NOT NULL, 
	data BLOB NOT NULL, 
	PRIMARY KEY (job_id, name), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
CREATE TABLE table_rows (
	job_id VARCHAR(32) NOT NULL, 
	seq INTEGER NOT NULL, 
	field INTEGER NOT NULL, 
	image_id VARCHAR(255) NOT NULL, 
	result_id VARCHAR(255), 
	"row" TEXT NOT NULL, 
	PRIMARY KEY (job_id, seq), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE
);
CREATE INDEX ix_table_rows_job_field ON table_rows (job_id, field);
