-- A database made by the release before schema versioning (commit 36f88cf, metadata.create_all), with
--   graph-runtime keys create ci-runner --scope execute
--   graph-runtime run greet --set start.data.name='"ada"'   (task 1)  and  graph-runtime run greet   (task 2)
-- on a flows directory holding greet (start -> end). Dumped by pg_dump --inserts --no-owner --no-privileges (SET lines dropped); do not edit: it is what that release wrote.
CREATE TABLE public.api_key (
    id character varying(64) NOT NULL,
    name character varying NOT NULL,
    scope character varying(16) NOT NULL,
    secret_hash character varying NOT NULL,
    created timestamp with time zone NOT NULL,
    last_used timestamp with time zone,
    revoked timestamp with time zone
);

CREATE TABLE public.flow (
    id character varying(64) NOT NULL,
    latest_revision integer NOT NULL,
    deleted boolean NOT NULL,
    created timestamp with time zone NOT NULL,
    updated timestamp with time zone NOT NULL
);

CREATE TABLE public.flow_revision (
    flow_id character varying(64) NOT NULL,
    revision integer NOT NULL,
    definition json NOT NULL,
    digest character varying(64) NOT NULL,
    created timestamp with time zone NOT NULL
);

CREATE TABLE public.node_run (
    task_id bigint NOT NULL,
    node_id character varying(64) NOT NULL,
    status character varying(16) NOT NULL,
    started timestamp with time zone,
    finished timestamp with time zone,
    execution_time double precision,
    cost double precision,
    attempts integer NOT NULL,
    error json,
    output json
);

CREATE TABLE public.task (
    id bigint NOT NULL,
    flow_id character varying(64) NOT NULL,
    revision integer NOT NULL,
    status character varying(16) NOT NULL,
    data json NOT NULL,
    created timestamp with time zone NOT NULL,
    started timestamp with time zone,
    finished timestamp with time zone,
    result json,
    execution_time double precision,
    execution_cost double precision,
    error json,
    cancel_requested boolean NOT NULL,
    claims integer NOT NULL,
    lease_owner character varying(128),
    lease_expires timestamp with time zone,
    idempotency_key character varying,
    request_fingerprint character varying,
    key_id character varying
);

CREATE SEQUENCE public.task_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.task_id_seq OWNED BY public.task.id;

ALTER TABLE ONLY public.task ALTER COLUMN id SET DEFAULT nextval('public.task_id_seq'::regclass);

INSERT INTO public.api_key VALUES ('k5edef3bf50155c84', 'ci-runner', 'execute', '698dc8d64494f471eaaf2c92ca04a79e982d9b4894344e9a932a34496551c94c', '2026-11-30 02:45:19.805288+00', NULL, NULL);

INSERT INTO public.flow VALUES ('greet', 1, false, '2026-11-30 02:45:21.468019+00', '2026-11-30 02:45:21.468019+00');

INSERT INTO public.flow_revision VALUES ('greet', 1, '{"id":"greet","name":"Greet","override_policy":"permissive","defaults":{},"nodes":[{"id":"start","type":"start","settings":{"data":{"name":"world"}},"overridable":[]},{"id":"end","type":"end","settings":{},"overridable":[]}],"edges":[{"from":"start","to":"end","input":"request"}]}', 'a3bfd576c92dc89bf6c8259874e27484d940ed22ca356cf368739184ceeff69f', '2026-11-30 02:45:21.468019+00');

INSERT INTO public.node_run VALUES (1, 'start', 'succeeded', '2026-11-30 02:45:21.494907+00', '2026-11-30 02:45:21.499207+00', 0.004327, 0, 1, NULL, '{"name":"ada"}');
INSERT INTO public.node_run VALUES (1, 'end', 'succeeded', '2026-11-30 02:45:21.49938+00', '2026-11-30 02:45:21.5009+00', 0.001549, 0, 1, NULL, '{"request":{"name":"ada"}}');
INSERT INTO public.node_run VALUES (2, 'start', 'succeeded', '2026-11-30 02:45:22.460801+00', '2026-11-30 02:45:22.463592+00', 0.002845, 0, 1, NULL, '{"name":"world"}');
INSERT INTO public.node_run VALUES (2, 'end', 'succeeded', '2026-11-30 02:45:22.463725+00', '2026-11-30 02:45:22.464954+00', 0.001252, 0, 1, NULL, '{"request":{"name":"world"}}');

INSERT INTO public.task VALUES (1, 'greet', 1, 'succeeded', '{"node_id":null,"start_node_id":"start","end_node_id":"end","result_node_id":"end","init_context":{},"node_settings":{"start":{"data":{"name":"ada"}}}}', '2026-11-30 02:45:21.482769+00', '2026-11-30 02:45:21.488939+00', '2026-11-30 02:45:21.501046+00', '{"request":{"name":"ada"}}', 0.012107, 0, NULL, false, 1, NULL, NULL, NULL, NULL, NULL);
INSERT INTO public.task VALUES (2, 'greet', 1, 'succeeded', '{"node_id":null,"start_node_id":"start","end_node_id":"end","result_node_id":"end","init_context":{},"node_settings":{}}', '2026-11-30 02:45:22.448037+00', '2026-11-30 02:45:22.453407+00', '2026-11-30 02:45:22.465059+00', '{"request":{"name":"world"}}', 0.011652, 0, NULL, false, 1, NULL, NULL, NULL, NULL, NULL);

SELECT pg_catalog.setval('public.task_id_seq', 2, true);

ALTER TABLE ONLY public.api_key
    ADD CONSTRAINT api_key_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.flow
    ADD CONSTRAINT flow_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.flow_revision
    ADD CONSTRAINT flow_revision_pkey PRIMARY KEY (flow_id, revision);

ALTER TABLE ONLY public.node_run
    ADD CONSTRAINT node_run_pkey PRIMARY KEY (task_id, node_id);

ALTER TABLE ONLY public.task
    ADD CONSTRAINT task_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.task
    ADD CONSTRAINT uq_task_flow_idempotency_key UNIQUE (flow_id, idempotency_key);

CREATE INDEX ix_task_flow_id_id ON public.task USING btree (flow_id, id);

CREATE INDEX ix_task_status_id ON public.task USING btree (status, id);

ALTER TABLE ONLY public.flow_revision
    ADD CONSTRAINT flow_revision_flow_id_fkey FOREIGN KEY (flow_id) REFERENCES public.flow(id);

ALTER TABLE ONLY public.node_run
    ADD CONSTRAINT node_run_task_id_fkey FOREIGN KEY (task_id) REFERENCES public.task(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.task
    ADD CONSTRAINT task_flow_id_revision_fkey FOREIGN KEY (flow_id, revision) REFERENCES public.flow_revision(flow_id, revision);
