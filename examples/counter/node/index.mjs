// Rampart's reference application in Node.js: the same counter as the Python one.

const LIMIT_LOW = 0;
const LIMIT_HIGH = 100;

export const handler = async (event) => {
  const operation = event.operation;
  let counter = Number(event.counter ?? 0);
  if (operation === "increment") {
    counter += 1;
  } else if (operation === "decrement") {
    counter -= 1;
  } else {
    return { statusCode: 400, body: JSON.stringify({ error: "Invalid operation" }) };
  }
  counter = Math.max(LIMIT_LOW, Math.min(LIMIT_HIGH, counter));
  console.log(`${operation}: counter is now ${counter}`);
  return { statusCode: 200, body: JSON.stringify({ counter }) };
};
