/**
 * Plain JSON to and from google.protobuf.Value: a task's `input` and `result`.
 *
 * The generated Task has `input?: Value`, a message. A plain object put there is not
 * JSON to the encoder; it has to be a Value. These two functions are the one place that
 * conversion lives: the client takes and gives plain JSON, like the Python SDK.
 * (Struct fields, such as an event's `data` or a heartbeat's `progress`, are already
 * JsonObject in the generated code.)
 */

import { create, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { ListValueSchema, NullValue, StructSchema, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";

export type { JsonObject, JsonValue };

/** The Value of a JSON-like value; throws TypeError (naming where) for anything else. */
export function toValue(data: unknown, path = "$"): Value {
  if (data === null) {
    return create(ValueSchema, { kind: { case: "nullValue", value: NullValue.NULL_VALUE } });
  }
  switch (typeof data) {
    case "boolean":
      return create(ValueSchema, { kind: { case: "boolValue", value: data } });
    case "number":
      if (!Number.isFinite(data)) {
        throw new TypeError(`${path}: ${data} is not a JSON number`);
      }
      return create(ValueSchema, { kind: { case: "numberValue", value: data } });
    case "string":
      return create(ValueSchema, { kind: { case: "stringValue", value: data } });
    case "object":
      return objectValue(data as object, path);
    default:
      throw new TypeError(`${path}: ${typeof data} is not JSON`);
  }
}

function objectValue(data: object, path: string): Value {
  if (Array.isArray(data)) {
    const values = data.map((item, index) => toValue(item, `${path}[${index}]`));
    return create(ValueSchema, {
      kind: { case: "listValue", value: create(ListValueSchema, { values }) },
    });
  }
  const toJSON = (data as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") {
    // What JSON.stringify would write: a Date becomes its ISO string.
    return toValue(toJSON.call(data), path);
  }
  const prototype = Object.getPrototypeOf(data);
  if (prototype !== Object.prototype && prototype !== null) {
    throw new TypeError(`${path}: ${prototype?.constructor?.name ?? "object"} is not JSON`);
  }
  const fields: Record<string, Value> = {};
  for (const [key, item] of Object.entries(data)) {
    // JSON.stringify leaves out undefined members; so does this.
    if (item !== undefined) {
      fields[key] = toValue(item, `${path}.${key}`);
    }
  }
  return create(ValueSchema, {
    kind: { case: "structValue", value: create(StructSchema, { fields }) },
  });
}

/** The JSON of a Value; an unset Value (a task without input or result) is null. */
export function fromValue(value: Value | undefined): JsonValue {
  const kind = value?.kind;
  switch (kind?.case) {
    case undefined:
    case "nullValue":
      return null;
    case "boolValue":
    case "numberValue":
    case "stringValue":
      return kind.value;
    case "listValue":
      return kind.value.values.map(fromValue);
    case "structValue": {
      const object: JsonObject = {};
      for (const [key, item] of Object.entries(kind.value.fields)) {
        object[key] = fromValue(item);
      }
      return object;
    }
  }
}
