//! PostgreSQL: the shared engine for many nodes.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{
    postgres::{
        PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgValueFormat,
        PgValueRef,
    },
    Arguments, AssertSqlSafe, Decode, Executor, Postgres, Row as _, SqlSafeStr, Statement as _,
    TypeInfo, ValueRef,
};
use tessera_core::ports::{check_storable, Database, DbError, Engine, Row, Statement, Value};

use super::{decode_err, map_err, whole};

pub struct PgDb {
    pool: PgPool,
    types: ParamTypes,
}

/// Prepared statements kept per connection.
const STATEMENTS_KEPT: usize = 1024;

impl PgDb {
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        // Every statement is prepared once per connection and kept: the server runs a few
        // hundred distinct ones, more than sqlx's default cache of 100, and a re-prepare
        // costs round trips (and a catalog query for the columns' origins).
        let options = url
            .parse::<PgConnectOptions>()?
            .statement_cache_capacity(STATEMENTS_KEPT);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            types: ParamTypes::default(),
        })
    }
}

/// Encodes `v` as the type PostgreSQL inferred for parameter `n`.
///
/// The statement is prepared without declared types and is cached by its text, so
/// encoding from the `Value` variant alone would break whenever one call binds `NULL` or
/// text where an earlier call bound an integer.
fn add(args: &mut PgArguments, n: usize, ty: &str, v: Value) -> Result<(), DbError> {
    let bad = |v: &Value| DbError::Decode(format!("parameter ${n} ({ty}): cannot bind {v:?}"));
    let int = |v: &Value| match v {
        Value::Int(i) => Ok(*i),
        Value::Text(s) => s.parse::<i64>().map_err(|_| bad(v)),
        Value::Null => Err(bad(v)),
    };
    let r = match (ty, &v) {
        ("INT8" | "INT4" | "INT2" | "BOOL", Value::Null) => args.add(None::<i64>),
        (_, Value::Null) => args.add(None::<String>),
        ("INT8", _) => args.add(int(&v)?),
        ("INT4", _) => args.add(i32::try_from(int(&v)?).map_err(|_| bad(&v))?),
        ("INT2", _) => args.add(i16::try_from(int(&v)?).map_err(|_| bad(&v))?),
        ("BOOL", _) => args.add(int(&v)? != 0),
        ("FLOAT8", _) => args.add(int(&v)? as f64),
        ("TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN", Value::Text(s)) => args.add(s.clone()),
        ("TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN", Value::Int(i)) => {
            args.add(i.to_string())
        }
        _ => return Err(bad(&v)),
    };
    r.map_err(|e| DbError::Other(format!("bind ${n}: {e}")))
}

/// Distinct statements whose parameter types are kept (the server runs a few hundred).
const TYPES_KEPT: usize = 4096;

/// The parameter types PostgreSQL inferred for each statement, learnt when it is first
/// prepared on any connection. On the other connections it is then prepared with them
/// declared: describing it again would cost a round trip and, in sqlx, a catalog query
/// for the columns' origins, on every connection of the pool in turn.
#[derive(Default)]
struct ParamTypes(std::sync::Mutex<std::collections::HashMap<String, Arc<[String]>>>);

impl ParamTypes {
    fn get(&self, sql: &str) -> Option<Arc<[String]>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned()
    }

    fn put(&self, sql: &str, types: Arc<[String]>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= TYPES_KEPT {
            map.clear();
        }
        map.insert(sql.to_owned(), types);
    }
}

/// Runs `sql` on `conn` (prepared once per connection and cached by its text), binding
/// every parameter as the type PostgreSQL expects.
async fn run(
    conn: &mut PgConnection,
    known: &ParamTypes,
    sql: &str,
    params: Vec<Value>,
    fetch: bool,
) -> Result<(Vec<PgRow>, u64), DbError> {
    check_storable(&params)?;
    let types = match known.get(sql) {
        Some(types) => types,
        None => {
            let stmt = (&mut *conn)
                .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
                .await
                .map_err(map_err)?;
            let types: Arc<[String]> = match stmt.parameters() {
                Some(sqlx::Either::Left(types)) => {
                    types.iter().map(|t| t.name().to_owned()).collect()
                }
                _ => Arc::from([]),
            };
            known.put(sql, types.clone());
            types
        }
    };
    if types.len() != params.len() {
        return Err(DbError::Other(format!(
            "statement takes {} parameters, {} given",
            types.len(),
            params.len()
        )));
    }
    let mut args = PgArguments::default();
    for (i, (ty, v)) in types.iter().zip(params).enumerate() {
        add(&mut args, i + 1, ty, v)?;
    }
    // Cached by its text: a statement this connection prepared is not prepared again.
    let query = sqlx::query_with(AssertSqlSafe(sql.to_owned()), args);
    if fetch {
        Ok((query.fetch_all(conn).await.map_err(map_err)?, 0))
    } else {
        Ok((
            Vec::new(),
            query.execute(conn).await.map_err(map_err)?.rows_affected(),
        ))
    }
}

fn decode_row(row: &PgRow) -> Result<Row, DbError> {
    let mut out = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let v = row.try_get_raw(i).map_err(|e| decode_err(i, e))?;
        out.push(if v.is_null() {
            Value::Null
        } else {
            decode_value(i, v)?
        });
    }
    Ok(Row(out))
}

fn decode_value(i: usize, v: PgValueRef<'_>) -> Result<Value, DbError> {
    let e = |e| decode_err(i, e);
    let ty = v.type_info().name().to_owned();
    Ok(match ty.as_str() {
        "INT8" => Value::Int(<i64 as Decode<Postgres>>::decode(v).map_err(e)?),
        "INT4" => Value::Int(<i32 as Decode<Postgres>>::decode(v).map_err(e)?.into()),
        "INT2" => Value::Int(<i16 as Decode<Postgres>>::decode(v).map_err(e)?.into()),
        "BOOL" => Value::Int(<bool as Decode<Postgres>>::decode(v).map_err(e)?.into()),
        "FLOAT8" => Value::Int(whole(i, <f64 as Decode<Postgres>>::decode(v).map_err(e)?)?),
        "FLOAT4" => Value::Int(whole(
            i,
            <f32 as Decode<Postgres>>::decode(v).map_err(e)?.into(),
        )?),
        // SUM() of BIGINT is NUMERIC.
        "NUMERIC" => {
            Value::Int(numeric(&v).ok_or_else(|| decode_err(i, "NUMERIC is not a 64-bit integer"))?)
        }
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" | "JSON" => {
            Value::Text(<String as Decode<Postgres>>::decode(v).map_err(e)?)
        }
        other => return Err(decode_err(i, format!("unsupported type {other}"))),
    })
}

/// An integral NUMERIC as i64, from either wire format.
fn numeric(v: &PgValueRef<'_>) -> Option<i64> {
    match v.format() {
        PgValueFormat::Text => v.as_str().ok()?.parse().ok(),
        PgValueFormat::Binary => numeric_binary(v.as_bytes().ok()?),
    }
}

/// Binary NUMERIC: ndigits, weight, sign, dscale (i16 each), then base-10000 digits;
/// digit k is worth 10000^(weight - k).
fn numeric_binary(b: &[u8]) -> Option<i64> {
    let word = |k: usize| Some(i16::from_be_bytes([*b.get(2 * k)?, *b.get(2 * k + 1)?]));
    let (ndigits, weight, sign) = (word(0)?, i32::from(word(1)?), word(2)? as u16);
    if sign != 0 && sign != 0x4000 {
        return None; // NaN or infinity
    }
    let mut acc: i64 = 0;
    for k in 0..usize::try_from(ndigits).ok()? {
        let d = i64::from(word(4 + k)?);
        if weight - (k as i32) < 0 {
            if d != 0 {
                return None; // fractional part
            }
        } else {
            acc = acc.checked_mul(10_000)?.checked_add(d)?;
        }
    }
    for _ in 0..(weight + 1 - i32::from(ndigits)).max(0) {
        acc = acc.checked_mul(10_000)?;
    }
    if sign == 0x4000 {
        acc = acc.checked_neg()?;
    }
    Some(acc)
}

#[async_trait]
impl Database for PgDb {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let (rows, _) = run(&mut conn, &self.types, sql, params, true).await?;
        rows.iter().map(decode_row).collect()
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        Ok(run(&mut conn, &self.types, sql, params, false).await?.1)
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for st in statements {
            let (_, changed) = run(&mut tx, &self.types, st.sql, st.params, false).await?;
            if st.expect_change && changed == 0 {
                tx.rollback().await.map_err(map_err)?;
                return Err(DbError::Conflict);
            }
        }
        // Until here an error rolls back (dropping `tx`); during the commit it is unknown.
        tx.commit()
            .await
            .map_err(|e| DbError::CommitUnknown(e.to_string()))
    }

    async fn execute_script(&self, sql: &str) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use super::numeric_binary;

    fn enc(ndigits: i16, weight: i16, sign: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight, sign as i16, 0]
            .into_iter()
            .chain(digits.iter().copied())
        {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_integers() {
        assert_eq!(numeric_binary(&enc(0, 0, 0, &[])), Some(0));
        assert_eq!(numeric_binary(&enc(1, 0, 0, &[42])), Some(42));
        assert_eq!(numeric_binary(&enc(2, 1, 0, &[1, 2345])), Some(12345));
        assert_eq!(numeric_binary(&enc(1, 2, 0x4000, &[7])), Some(-700_000_000));
        assert_eq!(numeric_binary(&enc(2, 0, 0, &[1, 5000])), None); // 1.5
    }
}
