//! `gateway recording …`: session recordings from the command line, through the same
//! engine as the admin API, on the same store. A file is read on the gateway (host and
//! config) that holds it; the list shows every gateway's recordings.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cli::args::NameArgs;
use gateway::config::Config;

#[derive(Debug, Subcommand)]
pub enum RecordingCommand {
    /// List recordings (of every gateway sharing the store), newest first.
    List(ListArgs),
    /// Show one recording's index entry.
    Show(NameArgs),
    /// Copy a recording's file (from this gateway's recordings folder).
    Download(DownloadArgs),
    /// Delete a recording (its file and its entry).
    Delete(NameArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this link's recordings.
    #[arg(long)]
    link: Option<String>,
    /// Only this session's recordings.
    #[arg(long)]
    session: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The recording's id (may begin with `-`, like every generated id).
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// Where to write the file (`-` for standard output).
    #[arg(long, short)]
    output: String,
}

fn engine_error(e: gateway::engine::EngineError) -> anyhow::Error {
    match e {
        gateway::engine::EngineError::RecordingElsewhere(g) => anyhow::anyhow!(
            "this recording's file is on gateway {g:?}; run the command there (or use its admin API)"
        ),
        other => anyhow::anyhow!("{other}"),
    }
}

pub async fn run(cmd: RecordingCommand, cfg: Config) -> anyhow::Result<()> {
    let app = crate::cli::link::engine(cfg, None).await?;
    match cmd {
        RecordingCommand::List(a) => {
            let recs = app
                .list_recordings(a.link.as_deref(), a.session.as_deref())
                .await
                .map_err(engine_error)?;
            if a.json {
                println!("{}", serde_json::to_string(&recs)?);
            } else {
                for r in recs {
                    println!(
                        "{} link={} session={} console={}{} gateway={} status={} bytes={} started={}",
                        r.id,
                        r.link_id,
                        r.session_id,
                        r.console,
                        r.channel.map(|c| format!("/{c}")).unwrap_or_default(),
                        r.gateway,
                        r.status.as_str(),
                        r.bytes,
                        r.started_at
                    );
                }
            }
        }
        RecordingCommand::Show(a) => {
            let r = app.get_recording(&a.name).await.map_err(engine_error)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        RecordingCommand::Download(a) => {
            // Copied a buffer at a time: memory does not grow with the recording.
            use tokio::io::AsyncReadExt;
            let (_, f, len) = app.open_recording_file(&a.id).await.map_err(engine_error)?;
            let mut from = f.take(len);
            if a.output == "-" {
                tokio::io::copy(&mut from, &mut tokio::io::stdout()).await?;
            } else {
                let mut to = tokio::fs::File::create(&a.output)
                    .await
                    .with_context(|| format!("writing {}", a.output))?;
                let n = tokio::io::copy(&mut from, &mut to)
                    .await
                    .with_context(|| format!("writing {}", a.output))?;
                tokio::io::AsyncWriteExt::flush(&mut to).await?;
                eprintln!("wrote {} ({n} bytes)", a.output);
            }
        }
        RecordingCommand::Delete(a) => {
            app.delete_recording(&a.name, None)
                .await
                .map_err(engine_error)?;
            println!("deleted {}", a.name);
        }
    }
    Ok(())
}
