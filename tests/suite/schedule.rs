//! Recurring jobs against the real queue and store, on each backend: due times fire once
//! each, across restarts and a crash between submitting and recording a run; missed runs
//! follow `catch_up`.

use crate::common;

use chrono::{DateTime, Duration, Utc};
use common::{Backend, Harness};
use sluice::schedule::{load_dir, Definition, Scheduler};

on_all_backends!(
    due_times_fire_once_each_across_restarts_and_crashes,
    missed_runs_follow_the_catch_up_policy,
    the_running_scheduler_fires_on_time,
    a_scheduled_jsonl_file_becomes_one_bulk_per_due_time,
);

/// Loads one definition file written into the harness's folder.
fn definition(h: &Harness, name: &str, body: &str) -> Definition {
    let dir = h.dir.path().join(format!("jobs-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let request =
        "[request]\nmodel = \"fast\"\nmessages = [{ role = \"user\", content = \"tick\" }]\n";
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("tenant = \"acme\"\n{body}\n{request}"),
    )
    .unwrap();
    let (mut definitions, errors) = load_dir(&dir, &h.app.config);
    assert!(errors.is_empty(), "{errors:?}");
    definitions.remove(0)
}

async fn jobs_of(h: &Harness, name: &str) -> Vec<String> {
    sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT custom_id FROM jobs WHERE custom_id LIKE $1 ORDER BY custom_id")
        .bind(format!("schedule:{name}:%"))
        .fetch_all(pool)
        .await
        .unwrap())
}

fn at_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

async fn due_times_fire_once_each_across_restarts_and_crashes(backend: Backend) {
    let h = Harness::start_with(backend, |_| {}, false).await;
    let every_second = definition(&h, "pulse", "schedule = \"* * * * * *\"");
    let t0 = at_second(Utc::now()) + Duration::milliseconds(500);

    let scheduler = Scheduler::new(vec![every_second.clone()], h.app.submitter());
    // The first tick only notes when the definition was first seen: nothing before is owed.
    scheduler.tick(t0).await.unwrap();
    assert!(jobs_of(&h, "pulse").await.is_empty());
    let next = scheduler.tick(t0 + Duration::seconds(3)).await.unwrap();
    let fired = jobs_of(&h, "pulse").await;
    assert_eq!(fired.len(), 3, "{fired:?}");
    assert_eq!(next, Some(at_second(t0) + Duration::seconds(4)));

    // A restart (a new scheduler on the same store) owes nothing for the same moment.
    let restarted = Scheduler::new(vec![every_second.clone()], h.app.submitter());
    restarted.tick(t0 + Duration::seconds(3)).await.unwrap();
    assert_eq!(jobs_of(&h, "pulse").await, fired);

    // A crash after submitting the last run but before recording it: the restart fires that
    // due time again, and its custom_id makes that a no-op.
    let last_due = (at_second(t0) + Duration::seconds(3)).timestamp_millis();
    h.app
        .store
        .write(move |mut conn| {
            Box::pin(async move {
                sluice::with_conn!(conn, c => sqlx::query(
                    "DELETE FROM schedule_runs WHERE name = 'pulse' AND due_at = $1",
                )
                .bind(last_due)
                .execute(&mut *c)
                .await
                .map(|_| ()))
            })
        })
        .await
        .unwrap();
    restarted.tick(t0 + Duration::seconds(3)).await.unwrap();
    assert_eq!(jobs_of(&h, "pulse").await, fired, "no second job");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM schedule_runs WHERE name = 'pulse'")
            .await,
        3,
        "and the run is recorded again"
    );

    // A manual run is a run of its own.
    let job = restarted
        .fire(&every_second, t0 + Duration::seconds(3), true)
        .await
        .unwrap();
    assert_eq!(jobs_of(&h, "pulse").await.len(), 4);
    assert!(
        h.client.get(job, None).await.is_ok(),
        "the tenant sees its run"
    );
    h.stop().await;
}

async fn missed_runs_follow_the_catch_up_policy(backend: Backend) {
    let h = Harness::start_with(backend, |_| {}, false).await;
    // Half past an hour six hours ago, then five hours later: five hourly due times passed,
    // the newest of them at least half an hour ago, so every one is missed, not on time.
    let this_hour = DateTime::from_timestamp(Utc::now().timestamp() / 3600 * 3600, 0).unwrap();
    let t0 = this_hour - Duration::hours(6) + Duration::minutes(30);
    let later = t0 + Duration::hours(5);
    let mut expected = Vec::new();
    for (name, policy, jobs, skipped) in [
        ("every", "all", 5, 0),
        ("newest", "latest", 1, 0),
        ("none", "skip", 0, 1),
    ] {
        let hourly = definition(
            &h,
            name,
            &format!("schedule = \"@hourly\"\ncatch_up = \"{policy}\""),
        );
        let scheduler = Scheduler::new(vec![hourly], h.app.submitter());
        scheduler.tick(t0).await.unwrap();
        scheduler.tick(later).await.unwrap();
        let fired = jobs_of(&h, name).await;
        assert_eq!(fired.len(), jobs, "{policy}: {fired:?}");
        let recorded_skips = h
            .count(&format!(
                "SELECT COUNT(*) FROM schedule_runs WHERE name = '{name}' AND job_id IS NULL"
            ))
            .await;
        assert_eq!(recorded_skips, skipped, "{policy}");
        expected.push((name, fired));
        // Nothing more is owed at the same moment.
        scheduler.tick(later).await.unwrap();
        assert_eq!(jobs_of(&h, name).await.len(), jobs, "{policy} again");
    }
    // `latest` ran the most recent missed hour.
    let newest_hour = DateTime::from_timestamp(later.timestamp() / 3600 * 3600, 0).unwrap();
    assert_eq!(
        expected[1].1,
        [format!(
            "schedule:newest:{}",
            newest_hour.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )]
    );
    h.stop().await;
}

async fn the_running_scheduler_fires_on_time(backend: Backend) {
    let h = Harness::start(backend).await;
    let every_second = definition(&h, "live", "schedule = \"* * * * * *\"");
    let stop = tokio_util::sync::CancellationToken::new();
    let scheduler = Scheduler::new(vec![every_second], h.app.submitter());
    let running = tokio::spawn(scheduler.run(stop.clone()));
    // The scheduler runs for this long (the point of the test: what fires in 3.5 s).
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    stop.cancel();
    running.await.unwrap();

    let fired: Vec<(String, i64)> = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_as(
        "SELECT custom_id, created_at FROM jobs WHERE custom_id LIKE 'schedule:live:%' ORDER BY custom_id",
    )
    .fetch_all(pool)
    .await
    .unwrap());
    assert!(fired.len() >= 2, "{fired:?}");
    for (custom_id, created_at) in &fired {
        let due = DateTime::parse_from_rfc3339(custom_id.trim_start_matches("schedule:live:"))
            .unwrap()
            .timestamp_millis();
        // Fired at (not before) its due time; on a loaded machine it may be a little late.
        assert!(*created_at >= due, "{custom_id} created at {created_at}");
    }
    // The fired jobs run like any other.
    let id: String = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT id FROM jobs WHERE custom_id = $1")
        .bind(&fired[0].0)
        .fetch_one(pool)
        .await
        .unwrap());
    let job = h.wait(id.parse().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    h.stop().await;
}

async fn a_scheduled_jsonl_file_becomes_one_bulk_per_due_time(backend: Backend) {
    let h = Harness::start(backend).await;
    let dir = h.dir.path().join("jobs-file");
    std::fs::create_dir_all(dir.join("samples")).unwrap();
    let lines: String = (1..=4)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"custom_id": format!("t-{i}"), "body": {"model": "fast",
                    "messages": [{"role": "user", "content": format!("ticket {i}")}]}})
            )
        })
        .collect();
    std::fs::write(dir.join("samples/tickets.jsonl"), lines).unwrap();
    std::fs::write(
        dir.join("triage.toml"),
        "schedule = \"@daily\"\ntenant = \"acme\"\nurgency = \"standard\"\n\
         tags = { team = \"support\" }\nfile = \"samples/tickets.jsonl\"\n",
    )
    .unwrap();
    let (definitions, errors) = load_dir(&dir, &h.app.config);
    assert!(errors.is_empty(), "{errors:?}");
    let scheduler = Scheduler::new(definitions.clone(), h.app.submitter());
    let due = at_second(Utc::now());
    let bulk = scheduler.fire(&definitions[0], due, false).await.unwrap();
    // The same due time again (a crash before the run was recorded): the same bulk, no more jobs.
    let again = scheduler.fire(&definitions[0], due, false).await.unwrap();
    assert_eq!(bulk, again);
    assert_eq!(
        h.count(&format!(
            "SELECT COUNT(*) FROM jobs WHERE bulk_id = '{bulk}'"
        ))
        .await,
        4
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE team_tag = 'support' AND urgency = 'standard'")
            .await,
        4,
        "the definition's tags and urgency reach every line's job"
    );
    // And they run.
    let ids: Vec<String> = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT id FROM jobs WHERE bulk_id = $1")
        .bind(bulk.to_string())
        .fetch_all(pool)
        .await
        .unwrap());
    for id in ids {
        assert_eq!(h.wait(id.parse().unwrap()).await["status"], "succeeded");
    }
    h.stop().await;
}
