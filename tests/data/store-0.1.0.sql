BEGIN TRANSACTION;
CREATE TABLE attempts (
	pk INTEGER NOT NULL, 
	job_id VARCHAR(32) NOT NULL, 
	n INTEGER NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	worker VARCHAR(255), 
	gpu_ids JSON NOT NULL, 
	started FLOAT, 
	ended FLOAT, 
	exit_code INTEGER, 
	error TEXT, 
	infrastructure BOOLEAN NOT NULL, 
	mlflow_run_id VARCHAR(64), 
	PRIMARY KEY (pk)
);
INSERT INTO "attempts" VALUES(1,'bf1ce8852f',1,'succeeded','tcp://127.0.0.1:40875','["0"]',1.79624050521106100081e+09,1.79624050533649230005e+09,0,NULL,0,NULL);
INSERT INTO "attempts" VALUES(2,'a308396f33',1,'succeeded','tcp://127.0.0.1:40875','["0"]',1.79624050542654824257e+09,1.79624050554782152175e+09,0,NULL,0,NULL);
CREATE TABLE jobs (
	seq INTEGER NOT NULL, 
	id VARCHAR(32) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	user VARCHAR(255) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	priority INTEGER NOT NULL, 
	spec JSON NOT NULL, 
	depends_on JSON NOT NULL, 
	created FLOAT NOT NULL, 
	started FLOAT, 
	ended FLOAT, 
	not_before FLOAT, 
	progress JSON NOT NULL, 
	error TEXT, 
	mlflow JSON NOT NULL, 
	package BLOB, 
	outputs BLOB, 
	has_outputs BOOLEAN NOT NULL, 
	retry_from INTEGER NOT NULL, 
	code_hash VARCHAR(64), 
	rerun_of VARCHAR(32), 
	PRIMARY KEY (seq)
);
INSERT INTO "jobs" VALUES(1,'bf1ce8852f','finished','ada','succeeded',100,'{"name": "finished", "kind": "python", "source": "print(''hello'')\nprint(''world'')", "command": "", "params": {"lr": 0.1}, "resources": {"gpus": 1, "cpus": 1.0, "memory": 0}, "retries": {"max": 0, "backoff": 2.0, "factor": 2.0, "max_backoff": 300.0}, "timeout": null, "priority": 100, "env": {}, "depends_on": [], "outputs": [], "workdir": null, "experiment": "", "group": "", "register_model": "", "template": {"name": "python-cell", "version": 1, "hash": ""}, "user": "ada"}','[]',1.79624050520889854427e+09,1.79624050521106100081e+09,1.7962405053381245136e+09,NULL,'{}',NULL,'{}',NULL,NULL,0,1,'4713e467c4d957b3',NULL);
INSERT INTO "jobs" VALUES(2,'a308396f33','later','grace','succeeded',100,'{"name": "later", "kind": "python", "source": "print(''x'')", "command": "", "params": {}, "resources": {"gpus": 1, "cpus": 1.0, "memory": 0}, "retries": {"max": 0, "backoff": 2.0, "factor": 2.0, "max_backoff": 300.0}, "timeout": null, "priority": 100, "env": {}, "depends_on": [], "outputs": [], "workdir": null, "experiment": "", "group": "", "register_model": "", "template": {"name": "python-cell", "version": 1, "hash": ""}, "user": "grace"}','[]',1.79624050542534923553e+09,1.79624050542654824257e+09,1.79624050554889512065e+09,NULL,'{}',NULL,'{}',NULL,NULL,0,1,'ffd33ce3dd13b1ac',NULL);
CREATE TABLE lease (
	name VARCHAR(32) NOT NULL, 
	owner VARCHAR(64) NOT NULL, 
	url VARCHAR(1024), 
	pid INTEGER NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	expires FLOAT NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE logs (
	id INTEGER NOT NULL, 
	job_id VARCHAR(32) NOT NULL, 
	attempt INTEGER NOT NULL, 
	seq INTEGER NOT NULL, 
	stream VARCHAR(8) NOT NULL, 
	text TEXT NOT NULL, 
	time FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "logs" VALUES(1,'bf1ce8852f',1,1,'output','hello',1.79624050527545690535e+09);
INSERT INTO "logs" VALUES(2,'bf1ce8852f',1,2,'output','world',1.79624050527552366258e+09);
INSERT INTO "logs" VALUES(3,'a308396f33',1,1,'output','x',1.79624050548513245579e+09);
CREATE INDEX ix_jobs_user ON jobs (user);
CREATE UNIQUE INDEX ix_jobs_id ON jobs (id);
CREATE INDEX ix_jobs_state ON jobs (state);
CREATE UNIQUE INDEX ix_attempt_job_n ON attempts (job_id, n);
CREATE INDEX ix_attempts_job_id ON attempts (job_id);
CREATE UNIQUE INDEX ix_logs_job_attempt_seq ON logs (job_id, attempt, seq);
COMMIT;
