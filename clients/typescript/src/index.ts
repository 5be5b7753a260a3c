/** Conveyor's TypeScript client: see README.md. */

export {
  ConveyorClient,
  type ClientOptions,
  type LeasedTask,
  type PlainTask,
  plainTask,
  projectName,
  seconds,
  type TaskOptions,
} from "./client.js";
export { PermanentError, TaskCancelled, TaskContext } from "./context.js";
export { EventWatch, KEEPALIVE_TYPE, type WatchOptions } from "./events.js";
export { fromValue, type JsonObject, type JsonValue, toValue } from "./json.js";
export { defaultWorkerId, type Handler, type Logger, SDK_VERSION, Worker, type WorkerOptions } from "./worker.js";
export { Code, ConnectError } from "@connectrpc/connect";
export * from "./gen/conveyor/v1/enums_pb.js";
export type { Event, EventFilter } from "./gen/conveyor/v1/event_pb.js";
export type { Lease, Task, TaskError, TaskFilter } from "./gen/conveyor/v1/task_pb.js";
