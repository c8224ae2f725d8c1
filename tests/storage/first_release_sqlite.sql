-- A database made by the release before schema versioning (commit 36f88cf, metadata.create_all), with
--   graph-runtime keys create ci-runner --scope execute
--   graph-runtime run greet --set start.data.name='"ada"'   (task 1)  and  graph-runtime run greet   (task 2)
-- on a flows directory holding greet (start -> end). Dumped by sqlite3's iterdump; do not edit: it is what that release wrote.
BEGIN TRANSACTION;
CREATE TABLE api_key (
	id VARCHAR(64) NOT NULL, 
	name VARCHAR NOT NULL, 
	scope VARCHAR(16) NOT NULL, 
	secret_hash VARCHAR NOT NULL, 
	created DATETIME NOT NULL, 
	last_used DATETIME, 
	revoked DATETIME, 
	PRIMARY KEY (id)
);
INSERT INTO "api_key" VALUES('k74ac510cfaccc10e','ci-runner','execute','fe50b9da7f2a885d72885851508ec2f00966d5e1249708be4f43060f79d8080b','2026-11-30 02:45:10.569076',NULL,NULL);
CREATE TABLE flow (
	id VARCHAR(64) NOT NULL, 
	latest_revision INTEGER NOT NULL, 
	deleted BOOLEAN NOT NULL, 
	created DATETIME NOT NULL, 
	updated DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "flow" VALUES('greet',1,0,'2026-11-30 02:45:11.728068','2026-11-30 02:45:11.728068');
CREATE TABLE flow_revision (
	flow_id VARCHAR(64) NOT NULL, 
	revision INTEGER NOT NULL, 
	definition JSON NOT NULL, 
	digest VARCHAR(64) NOT NULL, 
	created DATETIME NOT NULL, 
	PRIMARY KEY (flow_id, revision), 
	FOREIGN KEY(flow_id) REFERENCES flow (id)
);
INSERT INTO "flow_revision" VALUES('greet',1,'{"id":"greet","name":"Greet","override_policy":"permissive","defaults":{},"nodes":[{"id":"start","type":"start","settings":{"data":{"name":"world"}},"overridable":[]},{"id":"end","type":"end","settings":{},"overridable":[]}],"edges":[{"from":"start","to":"end","input":"request"}]}','a3bfd576c92dc89bf6c8259874e27484d940ed22ca356cf368739184ceeff69f','2026-11-30 02:45:11.728068');
CREATE TABLE node_run (
	task_id INTEGER NOT NULL, 
	node_id VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	started DATETIME, 
	finished DATETIME, 
	execution_time FLOAT, 
	cost FLOAT, 
	attempts INTEGER NOT NULL, 
	error JSON, 
	output JSON, 
	PRIMARY KEY (task_id, node_id), 
	FOREIGN KEY(task_id) REFERENCES task (id) ON DELETE CASCADE
);
INSERT INTO "node_run" VALUES(1,'start','succeeded','2026-11-30 02:45:11.744801','2026-11-30 02:45:11.745208',0.000434,0.0,1,NULL,'{"name":"ada"}');
INSERT INTO "node_run" VALUES(1,'end','succeeded','2026-11-30 02:45:11.745338','2026-11-30 02:45:11.745578',0.000262,0.0,1,NULL,'{"request":{"name":"ada"}}');
INSERT INTO "node_run" VALUES(2,'start','succeeded','2026-11-30 02:45:12.657953','2026-11-30 02:45:12.658221',0.000297,0.0,1,NULL,'{"name":"world"}');
INSERT INTO "node_run" VALUES(2,'end','succeeded','2026-11-30 02:45:12.658306','2026-11-30 02:45:12.658457',0.000165,0.0,1,NULL,'{"request":{"name":"world"}}');
CREATE TABLE task (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	flow_id VARCHAR(64) NOT NULL, 
	revision INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	data JSON NOT NULL, 
	created DATETIME NOT NULL, 
	started DATETIME, 
	finished DATETIME, 
	result JSON, 
	execution_time FLOAT, 
	execution_cost FLOAT, 
	error JSON, 
	cancel_requested BOOLEAN NOT NULL, 
	claims INTEGER NOT NULL, 
	lease_owner VARCHAR(128), 
	lease_expires DATETIME, 
	idempotency_key VARCHAR, 
	request_fingerprint VARCHAR, 
	key_id VARCHAR, 
	FOREIGN KEY(flow_id, revision) REFERENCES flow_revision (flow_id, revision), 
	CONSTRAINT uq_task_flow_idempotency_key UNIQUE (flow_id, idempotency_key)
);
INSERT INTO "task" VALUES(1,'greet',1,'succeeded','{"node_id":null,"start_node_id":"start","end_node_id":"end","result_node_id":"end","init_context":{},"node_settings":{"start":{"data":{"name":"ada"}}}}','2026-11-30 02:45:11.742535','2026-11-30 02:45:11.743654','2026-11-30 02:45:11.745731','{"request":{"name":"ada"}}',0.002077,0.0,NULL,0,1,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "task" VALUES(2,'greet',1,'succeeded','{"node_id":null,"start_node_id":"start","end_node_id":"end","result_node_id":"end","init_context":{},"node_settings":{}}','2026-11-30 02:45:12.655791','2026-11-30 02:45:12.657219','2026-11-30 02:45:12.658547','{"request":{"name":"world"}}',0.001328,0.0,NULL,0,1,NULL,NULL,NULL,NULL,NULL);
CREATE INDEX ix_task_flow_id_id ON task (flow_id, id);
CREATE INDEX ix_task_status_id ON task (status, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('task',2);
COMMIT;
