/**
 * ConveyorClient: the generated services over one gRPC (HTTP/2) connection with the
 * API key on every call, and the task methods with `input` and `result` as plain JSON.
 *
 *     const client = new ConveyorClient({ address: "127.0.0.1:50051", apiKey });
 *     const task = await client.createTask("email.send", { to: "ada@example.com" });
 *     task.input; // { to: "ada@example.com" }
 *
 * Every generated service is there too (`client.tasks`, `client.queues`, ...) for what
 * the task methods do not cover; they take and give the generated messages.
 */

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { CommandService } from "./gen/conveyor/v1/command_pb.js";
import { EventService } from "./gen/conveyor/v1/event_pb.js";
import { ProjectService } from "./gen/conveyor/v1/project_pb.js";
import { QueueService } from "./gen/conveyor/v1/queue_pb.js";
import { ScheduleService } from "./gen/conveyor/v1/schedule_pb.js";
import { type Task, type TaskError, TaskErrorSchema, type TaskSchema } from "./gen/conveyor/v1/task_pb.js";
import { TaskService } from "./gen/conveyor/v1/task_service_pb.js";
import { WorkerService } from "./gen/conveyor/v1/worker_pb.js";
import { EventWatch, type WatchOptions } from "./events.js";
import { fromValue, type JsonObject, type JsonValue, toValue } from "./json.js";

/** A Task whose `input` and `result` are plain JSON (null when unset). */
export type PlainTask = Omit<Task, "$typeName" | "input" | "result"> & {
  input: JsonValue;
  result: JsonValue;
};

/** The plain form of a generated Task. */
export function plainTask(task: Task): PlainTask {
  const { $typeName: _, input, result, ...rest } = task;
  return { ...rest, input: fromValue(input), result: fromValue(result) };
}

/** Everything a Task takes at create, but its kind and input. */
export type TaskOptions = Omit<MessageInitShape<typeof TaskSchema>, "$typeName" | "kind" | "input"> & {
  /** Makes a retried create return the first task instead of a second one. */
  requestId?: string;
};

/** A task leased with LeaseTasks: report on it with its name and leaseId. */
export interface LeasedTask {
  name: string;
  leaseId: string;
  leaseExpireTime: Timestamp | undefined;
  task: PlainTask;
}

/** A Duration of `seconds` (fractions allowed), for the Task's duration fields. */
export function seconds(value: number): Duration {
  return durationFromMs(Math.round(value * 1000));
}

export interface ClientOptions {
  /** The gRPC server, `host:port` or `http://host:port`; default CONVEYOR_ADDRESS or 127.0.0.1:50051. */
  address?: string;
  /** The API key sent as `authorization: Bearer <key>`; default CONVEYOR_API_KEY. */
  apiKey?: string;
  /** `name` or `projects/name`; default `default`. */
  project?: string;
  /** More interceptors, after the one that adds the key. */
  interceptors?: Interceptor[];
}

/** `projects/{project}` for a project id or name. */
export function projectName(project: string): string {
  return project.startsWith("projects/") ? project : `projects/${project}`;
}

export class ConveyorClient {
  readonly project: string;
  readonly baseUrl: string;
  readonly transport: Transport;
  readonly tasks: Client<typeof TaskService>;
  readonly queues: Client<typeof QueueService>;
  readonly workers: Client<typeof WorkerService>;
  readonly schedules: Client<typeof ScheduleService>;
  readonly commands: Client<typeof CommandService>;
  readonly events: Client<typeof EventService>;
  readonly projects: Client<typeof ProjectService>;
  private readonly sessions: Http2SessionManager;

  constructor(options: ClientOptions = {}) {
    const address = options.address ?? process.env.CONVEYOR_ADDRESS ?? "127.0.0.1:50051";
    this.baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
    this.project = projectName(options.project ?? "default");
    const apiKey = options.apiKey ?? process.env.CONVEYOR_API_KEY;
    const auth: Interceptor = (next) => async (request) => {
      if (apiKey) {
        request.header.set("authorization", `Bearer ${apiKey}`);
      }
      return next(request);
    };
    // Our own session manager, so close() can end the HTTP/2 connection at once.
    this.sessions = new Http2SessionManager(this.baseUrl);
    this.transport = createGrpcTransport({
      baseUrl: this.baseUrl,
      sessionManager: this.sessions,
      interceptors: [auth, ...(options.interceptors ?? [])],
    });
    this.tasks = createClient(TaskService, this.transport);
    this.queues = createClient(QueueService, this.transport);
    this.workers = createClient(WorkerService, this.transport);
    this.schedules = createClient(ScheduleService, this.transport);
    this.commands = createClient(CommandService, this.transport);
    this.events = createClient(EventService, this.transport);
    this.projects = createClient(ProjectService, this.transport);
  }

  /** Closes the connection; calls still open end with an error. */
  close(): void {
    this.sessions.abort();
  }

  /** The full name of a task, from its id or name. */
  taskName(task: string): string {
    return task.includes("/") ? task : `${this.project}/tasks/${task}`;
  }

  // Tasks.

  /** Creates a task of `kind` with `input` (any JSON; omitted: none). */
  async createTask(kind: string, input?: unknown, options: TaskOptions = {}): Promise<PlainTask> {
    const { requestId, ...fields } = options;
    const task = await this.tasks.createTask({
      parent: this.project,
      requestId: requestId ?? "",
      task: { ...fields, kind, input: input === undefined ? undefined : toValue(input) },
    });
    return plainTask(task);
  }

  async getTask(name: string): Promise<PlainTask> {
    return plainTask(await this.tasks.getTask({ name: this.taskName(name) }));
  }

  async cancelTask(name: string, reason = ""): Promise<PlainTask> {
    return plainTask(await this.tasks.cancelTask({ name: this.taskName(name), reason }));
  }

  // Leases, for a worker that does not use Worker (the unary protocol).

  /** Leases up to `maxTasks` ready tasks of `queues`, waiting up to `waitSeconds`. */
  async leaseTasks(options: {
    worker: string;
    queues?: string[];
    maxTasks?: number;
    waitSeconds?: number;
    leaseSeconds?: number;
  }): Promise<LeasedTask[]> {
    const answer = await this.workers.leaseTasks({
      parent: this.project,
      worker: options.worker,
      queues: options.queues ?? ["default"],
      maxTasks: options.maxTasks ?? 1,
      waitTimeout: options.waitSeconds === undefined ? undefined : seconds(options.waitSeconds),
      leaseDuration: options.leaseSeconds === undefined ? undefined : seconds(options.leaseSeconds),
    });
    return answer.leases.map((lease) => ({
      name: lease.task?.name ?? "",
      leaseId: lease.leaseId,
      leaseExpireTime: lease.leaseExpireTime,
      task: plainTask(lease.task!),
    }));
  }

  /** Extends a lease; `cancelRequested` says the task should stop. FAILED_PRECONDITION when stale. */
  async extendLease(
    name: string,
    leaseId: string,
    options: { leaseSeconds?: number; progress?: JsonObject } = {},
  ): Promise<{ leaseExpireTime: Timestamp | undefined; cancelRequested: boolean }> {
    const answer = await this.workers.extendLease({
      name: this.taskName(name),
      leaseId,
      leaseDuration: options.leaseSeconds === undefined ? undefined : seconds(options.leaseSeconds),
      progress: options.progress,
    });
    return { leaseExpireTime: answer.leaseExpireTime, cancelRequested: answer.cancelRequested };
  }

  /** Reports success with `result` (any JSON). FAILED_PRECONDITION when the lease is stale. */
  async completeTask(
    name: string,
    leaseId: string,
    result?: unknown,
    options: { summary?: string; resumeToken?: string } = {},
  ): Promise<PlainTask> {
    const task = await this.workers.completeTask({
      name: this.taskName(name),
      leaseId,
      result: result === undefined ? undefined : toValue(result),
      summary: options.summary ?? "",
      resumeToken: options.resumeToken ?? "",
    });
    return plainTask(task);
  }

  /** Reports a failed attempt; retried while `retryable` and attempts are left. */
  async failTask(
    name: string,
    leaseId: string,
    error: { type: string; message: string; details?: JsonObject },
    retryable = true,
  ): Promise<PlainTask> {
    const task = await this.workers.failTask({
      name: this.taskName(name),
      leaseId,
      error: taskError(error, retryable),
      retryable,
    });
    return plainTask(task);
  }

  // Events.

  /** An async iterator of the project's events that resumes by itself after breaks. */
  watchEvents(options: WatchOptions = {}): EventWatch {
    return new EventWatch(this.events, this.project, options);
  }
}

export function taskError(
  error: { type: string; message: string; details?: JsonObject },
  retryable: boolean,
): TaskError {
  return create(TaskErrorSchema, { ...error, retryable });
}
